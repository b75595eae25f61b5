// The one thing a key may change on a file it did not publish in this very session: the times of a
// file it published itself, on another of its sessions, within the last hour (issue 20, item 2).
// rclone uploads over a pool of SSH sessions and sets each file's modification time afterwards
// with SETSTAT, often on another session than the upload's; refused, it reports "immutable file
// modified" and stores nothing more.
//
// Why it is safe: the times are metadata the key chose anyway (FSETSTAT before CLOSE sets them on
// any upload); the file's bytes, name, mode, size and owner cannot change this way, and nothing of
// ours reads mtime (prune orders by the recorded arrival, seal ages files by ctime, verify --stored
// compares hashes). The window runs from the recorded arrival, by our clock, so it cannot be
// stretched; a sealed file is root's and is refused before futimes would fail anyway.
//
// "Published by this key" is the arrivals record (arrivals.ts): the line for the path names the
// key (k), the inode (i) and, where the filesystem records one, the birth time (b), so a later
// file on a reused inode number is not taken for it. Each session reads only the record's tail:
// the lines of the last hour once, then what was appended since (prune's compaction, which
// rewrites the file, makes it start again).
import fs from "node:fs";
import path from "node:path";
import { ARRIVALS_FILE, parseLine, type Arrival } from "./arrivals.js";
import { closeQuietly, inodeKey } from "../fsat.js";

/** How long after its arrival a file's times may still be set by another session of its key. */
export const TIMES_WINDOW_MS = 60 * 60 * 1000;
/** Lines are appended nearly in the order of their times (each is stamped before the lock is taken). */
const SLACK_MS = 5 * 60 * 1000;
const CHUNK = 64 * 1024;
const C = fs.constants;

/** What the rule looks at: the file as it stands (lstat), and the latest arrival line for its path. */
export interface Candidate {
  st: fs.Stats;
  arrival: Arrival | undefined;
  label: string;
  uid: number;
  now: number;
}

/** The rule, row by row: the first row whose test fails says why the times cannot be set. */
const RULE: ReadonlyArray<readonly [why: string, holds: (c: Candidate) => boolean]> = [
  ["it is not a regular file with a single link", (c) => c.st.isFile() && c.st.nlink === 1],
  ["it is sealed (no longer this account's)", (c) => c.st.uid === c.uid],
  ["this key did not publish it", (c) => c.arrival !== undefined && c.arrival.k === c.label],
  ["it was published more than an hour ago", (c) => c.now - c.arrival!.t <= TIMES_WINDOW_MS && c.arrival!.t <= c.now + SLACK_MS],
  ["it is not the file that was published under this name", (c) => sameAsArrived(c.st, c.arrival!)],
];

/** Is `st` the very file the arrival line recorded (its inode, and its birth time where recorded)? */
function sameAsArrived(st: fs.Stats, a: Arrival): boolean {
  return inodeKey(st) === a.i && (!a.b || a.b === st.birthtimeMs);
}

/** Why the times of this file cannot be set by another session of the key, or undefined if they can. */
export function whyNotTimes(c: Candidate): string | undefined {
  return RULE.find(([, holds]) => !holds(c))?.[0];
}

/** The arrivals of the last hour, for one session, read incrementally from the record's tail. */
export class RecentArrivals {
  private file: string | undefined; // inodeKey of the record read so far
  private pos = 0;
  private readonly byPath = new Map<string, Arrival>();

  constructor(private readonly state: string) {}

  /** The latest arrival recorded for `rel` among those of the last hour (plus slack). */
  find(rel: string, now = Date.now()): Arrival | undefined {
    this.refresh(now - TIMES_WINDOW_MS - SLACK_MS);
    return this.byPath.get(rel);
  }

  private refresh(cutoff: number): void {
    let fd: number;
    try {
      fd = fs.openSync(path.join(this.state, ARRIVALS_FILE), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      this.byPath.clear();
      this.file = undefined;
      return;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return this.byPath.clear();
      if (inodeKey(st) !== this.file || st.size < this.pos) {
        this.byPath.clear();
        this.file = inodeKey(st);
        this.pos = tailStart(fd, st.size, cutoff);
      }
      this.pos = readLines(fd, this.pos, st.size, (a) => {
        if (a.r) {
          if (this.byPath.get(a.p)?.i === a.i) this.byPath.delete(a.p);
        } else if (a.t >= cutoff) this.byPath.set(a.p, a);
      });
      // A long session: what fell out of the window goes, so memory stays one hour's arrivals.
      if (this.byPath.size > 10_000) for (const [p, a] of this.byPath) if (a.t < cutoff) this.byPath.delete(p);
    } finally {
      closeQuietly(fd);
    }
  }
}

/** Where the lines stamped from `cutoff` on begin: chunks are read backwards until one starts with an older line. */
function tailStart(fd: number, size: number, cutoff: number): number {
  const buf = Buffer.allocUnsafe(CHUNK);
  for (let end = size; end > 0; ) {
    const start = Math.max(0, end - CHUNK);
    const chunk = buf.subarray(0, fs.readSync(fd, buf, 0, end - start, start));
    const from = start === 0 ? 0 : chunk.indexOf(10) + 1; // the first line that begins in this chunk
    const nl = from > 0 || start === 0 ? chunk.indexOf(10, from) : -1;
    const first = nl >= 0 ? parseLine(chunk.toString("utf8", from, nl)) : undefined;
    if (first && first.t < cutoff) return start + from;
    end = start;
  }
  return 0;
}

/** Hand each complete line of [from, to) to fn; returns where the first incomplete line begins. */
function readLines(fd: number, from: number, to: number, fn: (a: Arrival) => void): number {
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = from;
  while (pos < to) {
    const chunk = buf.subarray(0, fs.readSync(fd, buf, 0, Math.min(CHUNK, to - pos), pos));
    if (chunk.length === 0) break;
    let at = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, at)) {
      const a = parseLine(chunk.toString("utf8", at, nl));
      if (a) fn(a);
      at = nl + 1;
    }
    // No newline in a whole chunk: no line of ours is that long (a torn or forged one); skipped.
    if (at === 0 && chunk.length === CHUNK) at = CHUNK;
    if (at === 0) break; // the last line is still being written
    pos += at;
  }
  return pos;
}
