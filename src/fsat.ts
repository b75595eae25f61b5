// Directory-relative file operations. Node has no openat(2); a path through /proc/self/fd/N
// resolves the magic link to the directory object we opened, not to whatever now has its name,
// so walking fd by fd with O_NOFOLLOW gives openat's race-freedom.
import fs from "node:fs";

const C = fs.constants;
export const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
// O_NONBLOCK: opening a FIFO planted in the tree must not hang us.
export const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;

export function at(dirFd: number, name?: string): string {
  // The directory itself: the trailing '/' makes open(O_NOFOLLOW) resolve the magic link (without
  // it the kernel refuses with ENOTDIR or ELOOP, the link being the last component).
  return name === undefined ? `/proc/self/fd/${dirFd}/` : `/proc/self/fd/${dirFd}/${name}`;
}

export function openDirAt(dirFd: number, name: string): number {
  return fs.openSync(at(dirFd, name), DIR_FLAGS);
}

export function lstatAt(dirFd: number, name: string): fs.Stats {
  return fs.lstatSync(at(dirFd, name));
}

export function lstatAtOrNull(dirFd: number, name: string): fs.Stats | null {
  // Without an exception for ENOENT: building one (with its stack) cost more than the lstat, and
  // "not there" is the common answer (every new upload asks it).
  return fs.lstatSync(at(dirFd, name), { throwIfNoEntry: false }) ?? null;
}

export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}

export function inodeKey(st: { dev: number | bigint; ino: number | bigint }): string {
  return `${st.dev}:${st.ino}`;
}
