// The audit log: one JSON line per event, written by pino to a destination that appends each line
// with a single write(2) on an O_APPEND descriptor, under the log's lock file.
import fs from "node:fs";
import { pino, type Logger } from "pino";
import { cleanValue } from "./sanitize.js";
import { withLock } from "../lock.js";

export type Fields = Record<string, unknown>;

export interface Audit {
  /** Write one event. Never throws: a broken log is reported on stderr, the session decides. */
  event(event: string, fields?: Fields): void;
  readonly ok: boolean;
}

class LockedAppend {
  private fd: number;
  constructor(
    file: string,
    private lockFile: string | undefined,
  ) {
    // O_APPEND: every write lands at the end, also with chattr +a; O_NOFOLLOW: never a planted link.
    this.fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o640);
    if (!fs.fstatSync(this.fd).isFile()) throw new Error(`${file} is not a regular file`);
  }
  write(line: string): void {
    const buf = Buffer.from(line.endsWith("\n") ? line : line + "\n");
    const append = () => {
      const n = fs.writeSync(this.fd, buf);
      if (n !== buf.length) throw new Error("short write to the audit log");
    };
    if (this.lockFile) withLock(this.lockFile, append);
    else append();
  }
}

export function openAudit(file: string, lockFile: string | undefined, base: Fields): Audit {
  let logger: Logger | undefined;
  let ok = true;
  try {
    const dest = new LockedAppend(file, lockFile);
    logger = pino(
      {
        base: cleanValue(base) as Fields,
        messageKey: "event",
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
      },
      dest,
    );
  } catch (e) {
    ok = false;
    process.stderr.write(`validate-backup: audit log ${file} cannot be opened: ${(e as Error).message}\n`);
  }
  return {
    get ok() {
      return ok;
    },
    event(event, fields = {}) {
      if (!logger) return;
      try {
        const level = fields.decision === "deny" || fields.anomaly ? "warn" : "info";
        logger[level](cleanValue(fields) as Fields, event);
      } catch (e) {
        ok = false;
        process.stderr.write(`validate-backup: audit log write failed: ${(e as Error).message}\n`);
      }
    },
  };
}

/** An audit sink for tests and for commands that log nowhere. */
export const nullAudit: Audit = { ok: true, event() {} };
