// Lock files made with O_EXCL. Node has no flock(2); a lock file holding the owner's pid, broken
// when that pid is gone, does the same job for the two places that need one: the audit log's
// append (the hash chain must stay linear) and the per-key session slots.
import fs from "node:fs";

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY } = fs.constants;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function ownerOf(file: string): number {
  try {
    const fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(32);
      const n = fs.readSync(fd, buf, 0, 32, 0);
      return Number.parseInt(buf.subarray(0, n).toString("ascii"), 10);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return NaN;
  }
}

/** Try once to take `file`; returns true on success. A lock whose owner is dead is broken. */
export function tryLock(file: string, staleMs = Infinity): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const owner = ownerOf(file);
    let old = false;
    try {
      old = Date.now() - fs.lstatSync(file).mtimeMs > staleMs;
    } catch {
      continue; // released meanwhile: try again
    }
    // An empty file is a lock being written right now (NaN owner): only age breaks it.
    if ((Number.isNaN(owner) || pidAlive(owner)) && !old) return false;
    try {
      fs.unlinkSync(file);
    } catch {
      /* someone else broke it first */
    }
  }
  return false;
}

export function unlock(file: string): void {
  try {
    if (ownerOf(file) === process.pid) fs.unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/** Run fn under the lock; waits at most waitMs, then breaks the lock (a stuck writer must not stop logging). */
export function withLock<T>(file: string, fn: () => T, waitMs = 3000): T {
  const deadline = Date.now() + waitMs;
  let delay = 1;
  while (!tryLock(file, waitMs)) {
    if (Date.now() > deadline) {
      try {
        fs.unlinkSync(file);
      } catch {
        /* gone */
      }
    }
    sleepMs(delay);
    delay = Math.min(delay * 2, 20);
  }
  try {
    return fn();
  } finally {
    unlock(file);
  }
}
