// Lock files. Node has no flock(2); a lock naming its owner, broken when that owner is gone, does
// the same job for the places that need one: the audit log's append (its hash chain must stay
// linear), the arrivals record, the per-key session slots and the vault's per-set locks.
//
// A lock is a symbolic link whose target is the owner ("pid start"): symlink(2) creates it with its
// content in one step, readlink(2) reads it back, and none of them ever follows it (root's
// housekeeping takes locks in a directory the backup user owns). An O_EXCL file with the owner
// written into it, as older versions made, took three calls instead of one and could be seen
// empty; such a file is still understood, so sessions of both versions exclude each other.
//
// A session that uploads takes two locks per file (the name's claim, the audit line's), and each
// symlink(2) is a new inode: 0.3 ms on ext4 while the session's own fsyncs commit the journal,
// against 0.04 ms for link(2). So once a session has its temporary area, it writes its owner
// there once (lockByLink) and takes every later lock by link(2)ing that file under the lock's
// name: the same content, read back the older versions' way, and swept with the area.
import fs from "node:fs";

const { O_NOFOLLOW, O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
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

/** The kernel's start time of a process (clock ticks since boot), or undefined if unreadable. */
function startTime(pid: number | "self"): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // Field 2 (the command name) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

// A pid alone is not an identity: a killed session's pid may belong to another process by the time
// the lock is looked at, which would hold a session slot forever. The start time tells them apart.
const SELF = `${process.pid} ${startTime("self") ?? "?"}`;

/** A file holding SELF that locks are linked to (lockByLink), or undefined: locks are symlinks. */
let ownerFile: string | undefined;

/**
 * From now on, take locks by link(2)ing `file` (created here, holding this process's identity)
 * where the lock's directory is on its filesystem. Whoever removes `file` later changes nothing:
 * the locks linked to it keep its content, and the next lock is a symlink again.
 */
export function lockByLink(file: string): void {
  try {
    const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    try {
      fs.writeSync(fd, SELF);
    } finally {
      fs.closeSync(fd);
    }
    ownerFile = file;
  } catch {
    /* symlinks, as before */
  }
}

/** Create the lock `file` naming this process; throws EEXIST when it is taken. */
function makeLock(file: string): void {
  if (ownerFile !== undefined) {
    try {
      fs.linkSync(ownerFile, file);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST") throw e;
      if (code !== "EXDEV") ownerFile = undefined; // gone (the area was removed): symlinks from now on
    }
  }
  fs.symlinkSync(SELF, file);
}

interface Owner {
  pid: number;
  start: string | undefined;
}

function parseOwner(text: string): Owner {
  const [pid, start] = text.trim().split(" ");
  return { pid: Number.parseInt(pid ?? "", 10), start: start === "?" ? undefined : start };
}

function ownerOf(file: string): Owner | undefined {
  try {
    return parseOwner(fs.readlinkSync(file, "latin1"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EINVAL") return undefined;
  }
  // EINVAL: not a link, a lock file of an older version.
  try {
    const fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(64);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      return parseOwner(buf.subarray(0, n).toString("latin1"));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

function ownerAlive(o: Owner): boolean {
  if (!pidAlive(o.pid)) return false;
  const now = o.start === undefined ? undefined : startTime(o.pid);
  return now === undefined || now === o.start;
}

/**
 * When a lock was taken, as far as its inode tells. A linked lock (a regular file with more than
 * one name: lockByLink) has its owner file's mtime, written when that was made, so its ctime
 * counts: link(2) sets it, and so does every later link of the same owner, which only makes the
 * lock look younger (broken later, never sooner). Any other lock: its mtime.
 */
function madeAt(st: fs.Stats): number {
  return st.isFile() && st.nlink > 1 ? st.ctimeMs : st.mtimeMs;
}

/** Try once to take `file`; returns true on success. A lock whose owner is gone, or older than staleMs, is broken. */
export function tryLock(file: string, staleMs = Infinity): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      makeLock(file);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const owner = ownerOf(file);
    let old = false;
    try {
      old = Date.now() - madeAt(fs.lstatSync(file)) > staleMs;
    } catch {
      continue; // released meanwhile: try again
    }
    // An empty lock file (an older version's, being written right now: NaN pid) or an unreadable
    // one may be held: only age breaks those. Two sessions breaking the same dead lock at once
    // can, in a window of a few system calls, both end up holding it; a dead holder is rare
    // enough to accept that.
    const held = !owner || Number.isNaN(owner.pid) || ownerAlive(owner);
    if (held && !old) return false;
    try {
      fs.unlinkSync(file);
    } catch {
      /* someone else broke it first */
    }
  }
  return false;
}

/**
 * Wait (up to maxMs) while another live process holds `file`; true if one held it when asked.
 * Never takes it: what the holder is doing is what the caller waits for.
 */
export function waitWhileHeld(file: string, maxMs: number): boolean {
  const until = Date.now() + maxMs;
  let held = false;
  for (let owner = ownerOf(file); owner && owner.pid !== process.pid && ownerAlive(owner) && Date.now() < until; owner = ownerOf(file)) {
    held = true;
    sleepMs(1);
  }
  return held;
}

/** How many of the locks in `dir` whose names start with `prefix` a live process holds. */
export function liveLocks(dir: string, prefix: string): number {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const o = ownerOf(`${dir}/${name}`);
    if (o && !Number.isNaN(o.pid) && ownerAlive(o)) n++;
  }
  return n;
}

/** Remove our lock; `checkOwner` false skips reading the owner back (see withLock). */
export function unlock(file: string, checkOwner = true): void {
  try {
    if (!checkOwner || ownerOf(file)?.pid === process.pid) fs.unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/**
 * Run fn under the lock. A holder that keeps it longer than waitMs is taken to be stuck and its
 * lock is broken (a stuck writer must not stop logging); if even that does not get the lock within
 * a few rounds (a clock set backwards), fn runs without it rather than hang the session, unless
 * `mustHold` (the audit log's chain): then it throws.
 */
export function withLock<T>(file: string, fn: () => T, waitMs = 3000, mustHold = false): T {
  const giveUp = Date.now() + 4 * waitMs;
  let delay = 1;
  let held = false;
  while (!(held = tryLock(file, waitMs)) && Date.now() < giveUp) {
    sleepMs(delay);
    delay = Math.min(delay * 2, 20);
  }
  if (!held && mustHold) throw new Error(`the lock ${file} could not be taken within ${(4 * waitMs) / 1000} s`);
  const since = Date.now();
  try {
    return fn();
  } finally {
    // Another process breaks a lock only when its owner is dead or it is older than waitMs (every
    // caller of a given lock uses the same wait): one held for less than half that is still ours,
    // and is removed without reading its owner back (one system call less per lock, per file).
    if (held) unlock(file, Date.now() - since >= waitMs / 2);
  }
}
