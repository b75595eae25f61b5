// Root's own records in a key's state directory: `state/monitor/`, a root-owned 0700 directory
// holding small JSON files written aside and renamed over (a reader never sees half a record). The
// state directory belongs to the backup user, so everything is reached by descriptor, never by a
// path resolved from the top, and a `monitor` that is not root's own directory is refused: what it
// holds decides whether root is told, and nobody but root may write that.
import fs from "node:fs";
import { VbError } from "../errors.js";
import { at, closeQuietly, DIR_FLAGS } from "../fsat.js";
import { writeTextAt } from "../remote/fsops.js";

const C = fs.constants;
export const MONITOR_DIR = "monitor";
const MAX_RECORD = 1024 * 1024;

/** Open state/monitor (made when `create`); undefined when absent and not to be made. The caller closes the fd. */
export function openMonitorDir(stateFd: number, create: boolean): number | undefined {
  if (create)
    try {
      fs.mkdirSync(at(stateFd, MONITOR_DIR), 0o700);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  let fd: number;
  try {
    fd = fs.openSync(at(stateFd, MONITOR_DIR), DIR_FLAGS);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && !create) return undefined;
    throw new VbError("IO", `state/${MONITOR_DIR} is not a directory of root's (${(e as NodeJS.ErrnoException).code})`);
  }
  const st = fs.fstatSync(fd);
  if (st.uid !== 0 || (st.mode & 0o077) !== 0) {
    closeQuietly(fd);
    throw new VbError("IO", `state/${MONITOR_DIR} must be root's own directory, mode 0700 (it is uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}): remove it, the next run makes it again`);
  }
  return fd;
}

/** A record, or undefined when there is none (or it is unusable: no record counts for nothing). */
export function readRecord<T>(dirFd: number, name: string): T | undefined {
  let fd: number;
  try {
    fd = fs.openSync(at(dirFd, name), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== 0 || st.size > MAX_RECORD) return undefined;
    return JSON.parse(fs.readFileSync(fd, "utf8")) as T;
  } catch {
    return undefined;
  } finally {
    closeQuietly(fd);
  }
}

/** Write a record: aside, fsync, rename over the old one (root's, 0600, like the directory). */
export function writeRecord(dirFd: number, name: string, value: unknown): void {
  writeTextAt(dirFd, name, JSON.stringify(value) + "\n", 0, 0, 0o600);
}

/** Read a record of a key's state directory by path (status and metrics only read). */
export function readStateRecord<T>(state: string, name: string): T | undefined {
  let stateFd: number;
  try {
    stateFd = fs.openSync(state, DIR_FLAGS);
  } catch {
    return undefined;
  }
  try {
    const dir = openMonitorDir(stateFd, false);
    if (dir === undefined) return undefined;
    try {
      return readRecord<T>(dir, name);
    } finally {
      closeQuietly(dir);
    }
  } finally {
    closeQuietly(stateFd);
  }
}

/** Open a key's state/monitor for writing, run fn with it, close everything. */
export function withMonitorDir<T>(state: string, fn: (dirFd: number) => T): T {
  const stateFd = fs.openSync(state, DIR_FLAGS);
  try {
    const dir = openMonitorDir(stateFd, true)!;
    try {
      return fn(dir);
    } finally {
      closeQuietly(dir);
    }
  } finally {
    closeQuietly(stateFd);
  }
}
