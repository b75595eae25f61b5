// When each file arrived, by our clock: prune orders chains by this, never by the dates in names,
// which the client chose. One JSON line per published file in state/arrivals.log, appended by the
// sessions without a lock (see append()); prune reads it (a later line for the same path wins) and
// compacts it.
//
// The record is evidence, not authority: prune only believes a line whose inode is the file's own,
// so a name reused after a prune, or a file planted behind the vault's back, has no arrival.
// A session that removes a file (its own, or a restic lock) appends a removal line (r), which takes
// the file's record out: restic's locks, one or more a run, would otherwise stay in it for good.
import fs from "node:fs";
import path from "node:path";
import { withLock } from "../lock.js";
import { at, closeQuietly } from "../fsat.js";
import { lockShaped } from "../profile/restic.js";
import { VbError, errnoText } from "../errors.js";

export const ARRIVALS_FILE = "arrivals.log";
const LOCK_FILE = "arrivals.lock";
const READ_CHUNK = 1024 * 1024;
const MAX_LINE = 8192;

export interface Arrival {
  /** Milliseconds since the epoch. */
  t: number;
  /** Path relative to the root, '/'-separated. */
  p: string;
  /** "dev:ino" of the file when it arrived. */
  i: string;
  /** Its birth time in ms, where the filesystem records one: with i, what tells it from a later file on a reused inode. */
  b?: number;
  /** The label of the key that published it (recent.ts: the key's other sessions may set its times). */
  k?: string;
  /** A rename of an own file: the path it left, whose record this one replaces. */
  f?: string;
  /** A removal: the file (p, i) is gone, and so is its record. */
  r?: true;
}

function line(a: Arrival): string {
  return JSON.stringify({ t: a.t, p: a.p, i: a.i, ...(a.b ? { b: a.b } : {}), ...(a.k !== undefined ? { k: a.k } : {}), ...(a.f !== undefined ? { f: a.f } : {}), ...(a.r ? { r: 1 } : {}) }) + "\n";
}

/**
 * Session side: note that `rel` arrived now, published by the key `k` (renamed from `from`, whose
 * record it replaces). A failure is reported to the caller, who audits it.
 */
export function recordArrival(state: string, rel: string, st: { dev: number; ino: number; birthtimeMs?: number }, t = Date.now(), k?: string, from?: string): void {
  append(state, line({ t, p: rel, i: `${st.dev}:${st.ino}`, b: st.birthtimeMs, k, f: from }));
}

/** Session side: the file `rel` (`st`) was removed; its record goes with it. */
export function recordRemoval(state: string, rel: string, st: { dev: number; ino: number }, t = Date.now()): void {
  append(state, line({ t, p: rel, i: `${st.dev}:${st.ino}`, r: true }));
}

/** The session's descriptor of the record, opened at its first line, and the file it is (its fstat, taken once). */
let held: { file: string; fd: number; dev: number; ino: number } | undefined;

function openRecord(file: string): { file: string; fd: number; dev: number; ino: number } {
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  try {
    const { dev, ino } = fs.fstatSync(fd);
    return { file, fd, dev, ino };
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
}

/**
 * One write(2) of one line on an O_APPEND descriptor: it lands whole, after every other line,
 * without a lock (a lock file cost two journalled name operations per stored file). Only root's
 * compaction replaces the file; it copies what was appended to the old one while it worked, and a
 * line that may have come after that copy is written again here, into the new file. A line twice
 * says nothing new (the later of equal lines wins). Compactions in a row, one after each of a
 * line's writes (a session descheduled while prune loops), could go on missing it: after a few
 * rounds the line is written under the compactions' own lock, where none can come between.
 */
function append(state: string, s: string): void {
  const text = Buffer.from(s);
  const file = path.join(state, ARRIVALS_FILE);
  for (let round = 0; round < LOCK_FREE_ROUNDS; round++) if (writeAndCheck(file, text)) return;
  withLock(path.join(state, "locks", LOCK_FILE), () => {
    if (!writeAndCheck(file, text)) throw new Error(`${file} was replaced while its lock was held`);
  });
}

/** Lines written without the lock before append() takes it. */
const LOCK_FREE_ROUNDS = 3;

/** Write the line on the held record (opened first if need be); whether the name is still that file. */
function writeAndCheck(file: string, text: Buffer): boolean {
  if (held?.file !== file) {
    if (held) closeQuietly(held.fd);
    held = undefined;
    held = openRecord(file);
  }
  if (fs.writeSync(held.fd, text) !== text.length) throw new Error(`short write to ${file}`);
  let named: fs.Stats | undefined;
  try {
    named = fs.lstatSync(file);
  } catch {
    /* removed: recreated on the next round */
  }
  if (named && named.ino === held.ino && named.dev === held.dev) return true;
  closeQuietly(held.fd);
  held = undefined; // the next round opens the name again
  return false;
}

export function parseLine(s: string): Arrival | undefined {
  try {
    const o = JSON.parse(s) as Partial<Arrival>;
    if (typeof o.t === "number" && Number.isFinite(o.t) && typeof o.p === "string" && typeof o.i === "string") {
      const a: Arrival = { t: o.t, p: o.p, i: o.i };
      if (typeof o.b === "number" && Number.isFinite(o.b)) a.b = o.b;
      if (typeof o.k === "string") a.k = o.k;
      if (typeof o.f === "string") a.f = o.f;
      if (o.r === (1 as unknown)) a.r = true;
      return a;
    }
  } catch {
    /* a torn or forged line counts for nothing */
  }
  return undefined;
}

/**
 * Stream the complete lines of an open file from `pos`, each with the offset just past its newline;
 * memory stays at one chunk plus one line. A last line without its newline (torn) is not one.
 */
function* lines(fd: number, pos = 0): Generator<[string, number]> {
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  let rest = Buffer.alloc(0);
  let restAt = pos;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, pos);
    if (n <= 0) break;
    pos += n;
    let data = rest.length ? Buffer.concat([rest, buf.subarray(0, n)]) : buf.subarray(0, n);
    let start = 0;
    for (let nl = data.indexOf(10); nl >= 0; nl = data.indexOf(10, start)) {
      yield [data.toString("utf8", start, nl), restAt + nl + 1];
      start = nl + 1;
    }
    restAt += start;
    data = data.subarray(start);
    rest = data.length > MAX_LINE ? Buffer.alloc(0) : Buffer.from(data); // no line of ours is that long
    if (data.length > MAX_LINE) restAt += data.length;
  }
}

export type ArrivalMap = Map<string, Arrival>;

/** Root side: the arrivals below the state directory opened as `stateFd` (never by a path). */
export function readArrivals(stateFd: number): ArrivalMap {
  const out: ArrivalMap = new Map();
  let fd: number;
  try {
    fd = fs.openSync(at(stateFd, ARRIVALS_FILE), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return out;
    throw e;
  }
  try {
    if (!fs.fstatSync(fd).isFile()) return out;
    // One entry per file that is there: a rename's line takes the place of the one it moved from,
    // so a client renaming in a loop grows the file (until prune compacts it), never this map.
    collect(fd, 0, out);
  } finally {
    closeQuietly(fd);
  }
  return out;
}

/** The latest arrival of a backup recorded, or undefined. A restic lock is none: read-only runs write one too. */
export function lastArrival(arrivals: ArrivalMap): number | undefined {
  let last: number | undefined;
  for (const a of arrivals.values()) if ((last === undefined || a.t > last) && !lockShaped(a.p.split("/"))) last = a.t;
  return last;
}

/**
 * Whether nothing arrived for longer than housekeeping.warnNoArrivalHours at `now` (nothing ever
 * arrived counts too): prune's warning and the monitor's stale key, one rule.
 */
export function arrivalOverdue(last: number | undefined, now: number, warnNoArrivalHours: number): boolean {
  return last === undefined || now - last > warnNoArrivalHours * 3_600_000;
}

/**
 * Root side: rewrite the record keeping what `keep` says. Sessions append without a lock, so
 * every complete line that reached the old file past what was read is copied into the new one
 * (append() writes again any line that may have come later still). Most of that tail is copied
 * before the rename: a write that fails there (ENOSPC, EIO) leaves the old record whole, and the
 * next prune compacts it. After the rename only the lines of the last moment are copied; should
 * that fail, they are lost, and their files, without an arrival, are never removed by prune. `stateFd`
 * and `locksFd` are open directories; the lock excludes another compaction (and sessions of older
 * versions, which took it to append); the new file keeps the old one's owner so that the sessions
 * can go on appending.
 */
export function compactArrivals(stateFd: number, locksFd: number, keep: (a: Arrival) => boolean): { kept: number; dropped: number } {
  const C = fs.constants;
  return withLock(at(locksFd, LOCK_FILE), () => {
    const tmpName = `${ARRIVALS_FILE}.${process.pid}.new`;
    let oldFd: number;
    try {
      oldFd = fs.openSync(at(stateFd, ARRIVALS_FILE), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch {
      return { kept: 0, dropped: 0 };
    }
    try {
      const old = fs.fstatSync(oldFd);
      if (!old.isFile()) return { kept: 0, dropped: 0 };
      const current: ArrivalMap = new Map();
      const readTo = collect(oldFd, 0, current);
      try {
        fs.unlinkSync(at(stateFd, tmpName));
      } catch {
        /* none left over */
      }
      const fd = fs.openSync(at(stateFd, tmpName), C.O_WRONLY | C.O_APPEND | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
      let kept = 0;
      let dropped = 0;
      let renamed = false;
      try {
        let chunk: string[] = [];
        const flush = () => {
          if (chunk.length) writeAll(fd, chunk.join(""));
          chunk = [];
        };
        for (const a of current.values()) {
          if (!keep(a)) {
            dropped++;
            continue;
          }
          kept++;
          chunk.push(line({ ...a, f: undefined })); // the rename is accounted for: its old path is gone
          if (chunk.length >= 4096) flush();
        }
        flush();
        const copied = copyTail(oldFd, readTo, fd);
        fs.fchownSync(fd, old.uid, old.gid);
        fs.fsyncSync(fd);
        fs.renameSync(at(stateFd, tmpName), at(stateFd, ARRIVALS_FILE));
        renamed = true;
        copyTail(oldFd, copied, fd);
      } catch (e) {
        closeQuietly(fd);
        if (renamed)
          throw new VbError("IO", `state/${ARRIVALS_FILE} was compacted, but lines sessions appended meanwhile could not be copied into it (${errnoText(e)}): their files have no arrival record, and prune keeps them`);
        try {
          fs.unlinkSync(at(stateFd, tmpName));
        } catch {
          /* none made */
        }
        throw new VbError("IO", `state/${ARRIVALS_FILE} could not be compacted (${errnoText(e)}): it is left as it was, and the next prune compacts it`);
      }
      closeQuietly(fd);
      return { kept, dropped };
    } finally {
      closeQuietly(oldFd);
    }
  });
}

/** Read the lines of fd from `pos` into `out` (as readArrivals does); returns where the last complete line ended. */
function collect(fd: number, pos: number, out: ArrivalMap): number {
  let end = pos;
  for (const [s, next] of lines(fd, pos)) {
    end = next;
    const a = parseLine(s);
    if (!a) continue;
    if (a.r) {
      if (out.get(a.p)?.i === a.i) out.delete(a.p);
      continue;
    }
    if (a.f !== undefined && a.f !== a.p) out.delete(a.f);
    out.set(a.p, a);
  }
  return end;
}

/** Append to `to` every complete line of `from` past `pos`, as it is; returns where the last one ended. */
function copyTail(from: number, pos: number, to: number): number {
  let end = pos;
  let out: string[] = [];
  for (const [s, next] of lines(from, pos)) {
    end = next;
    if (parseLine(s)) out.push(s + "\n");
    if (out.length >= 4096) {
      writeAll(to, out.join(""));
      out = [];
    }
  }
  if (out.length) writeAll(to, out.join(""));
  return end;
}

/** write(2) may take part of a buffer (a filesystem filling up): the rest goes on, or its error is thrown. */
function writeAll(fd: number, s: string): void {
  const b = Buffer.from(s);
  for (let off = 0; off < b.length; ) {
    const n = fs.writeSync(fd, b, off, b.length - off);
    if (n <= 0) throw new Error("write(2) wrote nothing");
    off += n;
  }
}
