// Filesystem operations for root-run code in places the backup account may control. Every path is
// walked from '/' one directory fd at a time with O_NOFOLLOW, and an object is changed only through
// a descriptor whose fstat matches what lstat saw, so a name swapped for a symbolic link between
// two calls is never followed by root.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";
import { at, openDirAt, lstatAtOrNull, closeQuietly, inodeKey, DIR_FLAGS, READ_FLAGS } from "../fsat.js";

const C = fs.constants;
export const STICKY = 0o1000;
export const MAX_TEXT_BYTES = 1024 * 1024;

/** The backup account as permission checks see it. */
export interface Who {
  uid: number;
  gids: ReadonlySet<number>;
}

export function modeStr(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** The account may change the object's contents or permissions (an owner can always chmod). */
export function writableBy(st: fs.Stats, who: Who): boolean {
  if (st.isSymbolicLink()) return st.uid === who.uid;
  return st.uid === who.uid || (who.gids.has(st.gid) && (st.mode & 0o020) !== 0) || (st.mode & 0o002) !== 0;
}

/** The account may pass through the directory. */
export function searchableBy(st: fs.Stats, who: Who): boolean {
  if (st.uid === who.uid) return (st.mode & 0o100) !== 0;
  if (who.gids.has(st.gid)) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** The account may rename or remove `child` from `dir` (the sticky bit protects others' entries). */
export function canReplace(dir: fs.Stats, child: fs.Stats | null, who: Who): boolean {
  if (!writableBy(dir, who)) return false;
  if ((dir.mode & STICKY) === 0 || dir.uid === who.uid) return true;
  return child === null || child.uid === who.uid;
}

/** '/a/b/c' -> ['/', '/a', '/a/b'] */
export function ancestorsOf(abs: string): string[] {
  const out: string[] = [];
  let p = path.dirname(abs);
  for (;;) {
    out.unshift(p);
    if (p === "/") return out;
    p = path.dirname(p);
  }
}

/** Resolve the symbolic links an administrator may have in the existing part of a path. */
export function canonical(abs: string): string {
  const rest: string[] = [];
  let p = path.resolve(abs);
  for (;;) {
    try {
      return path.join(fs.realpathSync(p), ...rest);
    } catch {
      if (p === "/") return path.resolve(abs);
      rest.unshift(path.basename(p));
      p = path.dirname(p);
    }
  }
}

/** Open the directory `abs` walking from '/', refusing any symbolic link on the way. */
export function openDirPath(abs: string): number {
  let fd = fs.openSync("/", DIR_FLAGS);
  try {
    for (const c of abs.split("/").filter(Boolean)) {
      const next = openDirAt(fd, c);
      fs.closeSync(fd);
      fd = next;
    }
    return fd;
  } catch (e) {
    closeQuietly(fd);
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw new VbError("OUTSIDE_ROOT", `${abs}: a component is a symbolic link, which root never follows here`);
    throw e;
  }
}

/** Run fn with the parent directory of `abs` open. */
export function withParent<T>(abs: string, fn: (dirFd: number, name: string) => T): T {
  const fd = openDirPath(path.dirname(abs));
  try {
    return fn(fd, path.basename(abs));
  } finally {
    closeQuietly(fd);
  }
}

/** lstat that says null for a missing object or a missing parent. */
export function lstatPath(abs: string): fs.Stats | null {
  try {
    return withParent(abs, (fd, name) => lstatAtOrNull(fd, name));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw e;
  }
}

/** Open `name` in dirFd (never following a link) and check it is the object lstat saw. */
export function openChecked(dirFd: number, name: string, seen: fs.Stats): number {
  const fd = fs.openSync(at(dirFd, name), seen.isDirectory() ? DIR_FLAGS : READ_FLAGS);
  if (inodeKey(fs.fstatSync(fd)) !== inodeKey(seen)) {
    fs.closeSync(fd);
    throw new VbError("IO", `${name} changed while it was being inspected; run again`);
  }
  return fd;
}

/** Owner, group and permission bits through a verified descriptor. chown first: it clears set-id bits. */
export function fixOwnerMode(dirFd: number, name: string, seen: fs.Stats, uid: number, gid: number, mode: number): void {
  if (seen.isSymbolicLink()) {
    fs.lchownSync(at(dirFd, name), uid, gid);
    return;
  }
  const fd = openChecked(dirFd, name, seen);
  try {
    if (seen.uid !== uid || seen.gid !== gid) fs.fchownSync(fd, uid, gid);
    fs.fchmodSync(fd, mode);
  } finally {
    fs.closeSync(fd);
  }
}

/** Read a regular text file without following a link; null when missing. */
export function readText(abs: string): string | null {
  if (lstatPath(abs) === null) return null;
  return withParent(abs, (dirFd, name) => {
    const st = lstatAtOrNull(dirFd, name);
    if (!st) return null;
    if (!st.isFile()) throw new VbError("BAD_REQUEST", `${abs}: not a regular file`);
    if (st.size > MAX_TEXT_BYTES) throw new VbError("BAD_REQUEST", `${abs}: larger than ${MAX_TEXT_BYTES} bytes`);
    const fd = openChecked(dirFd, name, st);
    try {
      return fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
  });
}

/** Replace a file's contents atomically: a new file beside it, renamed over the old name. */
export function writeTextAt(dirFd: number, name: string, content: string, uid: number, gid: number, mode: number): void {
  const tmp = `.${name}.vb-new-${process.pid}`;
  const fd = fs.openSync(at(dirFd, tmp), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, content);
    fs.fchownSync(fd, uid, gid);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } catch (e) {
    closeQuietly(fd);
    fs.unlinkSync(at(dirFd, tmp));
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(at(dirFd, tmp), at(dirFd, name));
}

/** Move something that should not be there out of the way (never deleted: it may be evidence). */
export function moveAside(dirFd: number, name: string): string {
  const aside = `${name}.vb-aside-${Date.now()}`;
  fs.renameSync(at(dirFd, name), at(dirFd, aside));
  return aside;
}

export interface TreeEntry {
  path: string;
  dirFd: number;
  name: string;
  st: fs.Stats;
}

/**
 * Visit every entry below `top` (not `top` itself), depth first, never through a link. `skip`
 * holds absolute paths not to enter (directories with rules of their own).
 */
export function walkTree(top: string, skip: ReadonlySet<string>, visit: (e: TreeEntry) => void, limit = 200_000): void {
  let count = 0;
  const walk = (dirFd: number, dirPath: string) => {
    const names = fs.readdirSync(at(dirFd)).sort();
    for (const name of names) {
      const p = path.join(dirPath, name);
      if (skip.has(p)) continue;
      if (++count > limit) throw new VbError("QUOTA", `${top}: more than ${limit} entries; not walked to the end`);
      const st = lstatAtOrNull(dirFd, name);
      if (!st) continue;
      visit({ path: p, dirFd, name, st });
      if (st.isDirectory()) {
        let sub: number;
        try {
          sub = openChecked(dirFd, name, st);
        } catch {
          continue; // vanished or replaced meanwhile
        }
        try {
          walk(sub, p);
        } finally {
          closeQuietly(sub);
        }
      }
    }
  };
  const fd = openDirPath(top);
  try {
    walk(fd, top);
  } finally {
    closeQuietly(fd);
  }
}
