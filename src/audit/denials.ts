// Command denials of one key, counted across its sessions: each denied command is a session of its
// own, so the per-session budget (budget.ts) cannot hold a client that connects in a loop. Per
// window of a minute the first DENIALS_PER_MINUTE are written; the rest are counted in a small
// record in state/locks, and the first denial written after the window says how many were not.
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

/**
 * One more denial: whether its line is written, and the fields it carries (how many were not
 * written before it, or that further ones in this window will not be). Any trouble with the
 * record errs on the side of writing the line.
 */
export function judgeDenial(locks: string, now = Date.now()): { write: boolean; fields: { [k: string]: unknown } } {
  const file = path.join(locks, RECORD);
  try {
    return withLock(path.join(locks, `${RECORD}.lock`), () => {
      let r = read(file) ?? { since: now, count: 0, carried: 0 };
      if (now - r.since >= WINDOW_MS || now < r.since) r = { since: now, count: 0, carried: r.carried + Math.max(0, r.count - DENIALS_PER_MINUTE) };
      r.count++;
      const write = r.count <= DENIALS_PER_MINUTE;
      const fields: { [k: string]: unknown } = {};
      if (write && r.carried) {
        fields[NOT_WRITTEN_BEFORE] = r.carried;
        r.carried = 0;
      }
      if (r.count === DENIALS_PER_MINUTE)
        Object.assign(fields, { anomaly: true, note: `${DENIALS_PER_MINUTE} denied commands of this key within a minute: further ones are counted, and the next one written says how many were not` });
      const tmp = `${file}.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(r), { mode: 0o600 });
      fs.renameSync(tmp, file);
      return { write, fields };
    });
  } catch {
    return { write: true, fields: {} };
  }
}
