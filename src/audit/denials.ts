// Command denials of one key, counted across its sessions: each denied command is a session of its
// own, so the per-session budget (budget.ts) cannot hold a client that connects in a loop. Per
// window of a minute the first DENIALS_PER_MINUTE are written; the rest are counted in a small
// record in state/locks, and the first line of the key written after the window says how many were
// not: the next written denial (judgeDenial), or any other session's first line (claimUnwritten), so
// a client that floods and then stops cannot leave denials out of the log for good.
//
// Nothing a client sends grows the record or the log beyond a bound: the record is three integers
// whatever the number of denials, and the count rides on a line that is written anyway (one field),
// so a flood adds at most DENIALS_PER_MINUTE lines a minute.
import fs from "node:fs";
import path from "node:path";
import { withLock } from "../lock.js";

/** The field of the next written denial that counts those not written before it (the review adds them). */
export const NOT_WRITTEN_BEFORE = "notWrittenBefore";

export const DENIALS_PER_MINUTE = 30;
const WINDOW_MS = 60_000;
const RECORD = "denials";

interface Record {
  /** When the window began (ms). */
  since: number;
  /** Denials in the window, written or not. */
  count: number;
  /** Denials of earlier windows not written and not yet reported. */
  carried: number;
}

function read(file: string): Record | undefined {
  try {
    const j = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<Record>;
    const ok = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
    return ok(j.since) && ok(j.count) ? { since: j.since, count: j.count, carried: ok(j.carried) ? j.carried : 0 } : undefined;
  } catch {
    return undefined;
  }
}

function windowOver(r: Record, now: number): boolean {
  return now - r.since >= WINDOW_MS || now < r.since;
}

/** Denials counted and not written whose window is over: what the key's next line is to report. */
function unwritten(r: Record, now: number): number {
  return r.carried + (windowOver(r, now) ? Math.max(0, r.count - DENIALS_PER_MINUTE) : 0);
}

/** Replace the record; a temporary file that could not take its place is removed (none is left behind). */
function save(file: string, r: Record): void {
  const tmp = `${file}.${process.pid}`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(r), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never made */
    }
    throw e;
  }
}

/** Writes the key's line with these fields added; false when it was not written. */
export type WriteLine = (fields: { [k: string]: unknown }) => boolean;

// The line that reports a count is written under the record's lock, and the record forgets the count
// only once the line is written: a log that fails (the session then ends at once) leaves it for the
// next line. A record that cannot be replaced after its line may report a count twice, never none.

/**
 * One more denial: its line is written through `line` unless past the window's limit, carrying how
 * many were not written before it, or that further ones in this window will not be. Any trouble
 * with the record errs on the side of writing the line.
 */
export function judgeDenial(locks: string, line: WriteLine, now = Date.now()): void {
  const file = path.join(locks, RECORD);
  let wrote = false;
  try {
    withLock(path.join(locks, `${RECORD}.lock`), () => {
      let r = read(file) ?? { since: now, count: 0, carried: 0 };
      if (windowOver(r, now)) r = { since: now, count: 0, carried: unwritten(r, now) };
      r.count++;
      if (r.count <= DENIALS_PER_MINUTE) {
        const fields: { [k: string]: unknown } = r.carried ? { [NOT_WRITTEN_BEFORE]: r.carried } : {};
        if (r.count === DENIALS_PER_MINUTE)
          Object.assign(fields, { anomaly: true, note: `${DENIALS_PER_MINUTE} denied commands of this key within a minute: further ones are counted, and the key's next line after the minute says how many were not` });
        wrote = true;
        if (line(fields)) r.carried = 0;
      }
      save(file, r);
    });
  } catch {
    if (!wrote) line({});
  }
}

/**
 * Write a line of this key that is not a denial held to the rate (the allowed request, a refusal
 * the client cannot repeat at will), carrying the denials counted and not written whose window is
 * over. Without any, the record is only read, unlocked: one small read for a session let in, or
 * for a refusal the client cannot repeat. A denial held to the rate goes through judgeDenial
 * instead, which takes the lock and rewrites the record every time.
 */
export function claimUnwritten(locks: string, line: WriteLine, now = Date.now()): void {
  const file = path.join(locks, RECORD);
  const seen = read(file);
  if (!seen || !unwritten(seen, now)) {
    line({});
    return;
  }
  let wrote = false;
  try {
    withLock(path.join(locks, `${RECORD}.lock`), () => {
      const r = read(file);
      const n = r ? unwritten(r, now) : 0;
      wrote = true;
      if (!line(n ? { [NOT_WRITTEN_BEFORE]: n } : {}) || !r || !n) return;
      // The window stays as it is, its excess now reported: the next denial starts a new one with nothing carried.
      save(file, { since: r.since, count: windowOver(r, now) ? Math.min(r.count, DENIALS_PER_MINUTE) : r.count, carried: 0 });
    });
  } catch {
    if (!wrote) line({});
  }
}
