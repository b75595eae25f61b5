// The audit log: one JSON line per event, written by pino to a destination that appends each line
// with a single write(2) on an O_APPEND descriptor, under the log's lock file.
import fs from "node:fs";
import path from "node:path";
import { pino, type Logger } from "pino";
import { cleanValue } from "./sanitize.js";
import { withLock } from "../lock.js";
import { chainLine, lineHash, tailHash } from "./chain.js";

export type Fields = Record<string, unknown>;

/** The `client` of root's own lines (seal, prune, verify --stored): never an address sshd gives a session. */
export const ROOT_CLIENT = "root";

export interface Audit {
  /** Write one event. Never throws: a broken log is reported on stderr, the session decides. */
  event(event: string, fields?: Fields): void;
  readonly ok: boolean;
}

class LockedAppend {
  private fd: number;
  /** The file's size after our last line and that line's hash: no need to read the tail again. */
  private last: { size: number; hash: string } | undefined;
  /** The lock's directory was there once: only root could take it away again. */
  private lockDirSeen = false;
  constructor(
    private readonly file: string,
    private lockFile: string | undefined,
    create: boolean,
  ) {
    // O_APPEND: every write lands at the end, also with chattr +a; O_NOFOLLOW: never a planted link.
    // O_RDWR: the hash chain needs the previous line, which another session may have written. A log
    // we may only write still gets its lines, marked as unchained (audit --verify reports them).
    // Without `create` (a config that failed validation) only an existing log is appended to: a
    // refused config must not make a file anywhere, even where its audit.file points.
    const flags = fs.constants.O_APPEND | (create ? fs.constants.O_CREAT : 0) | fs.constants.O_NOFOLLOW;
    try {
      this.fd = fs.openSync(file, fs.constants.O_RDWR | flags, 0o640);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EACCES") throw e;
      this.fd = fs.openSync(file, fs.constants.O_WRONLY | flags, 0o640);
      this.last = { size: NaN, hash: "unreadable" };
    }
    if (!fs.fstatSync(this.fd).isFile()) throw new Error(`${file} is not a regular file`);
  }
  /**
   * After `audit --rotate` (done under this lock) the name is a new file: a session that opened the
   * old one writes on in the new one, never into the sealed rotated file.
   */
  private followRotation(): void {
    let named: fs.Stats;
    try {
      named = fs.lstatSync(this.file);
    } catch {
      return; // gone: keep the file we have
    }
    const ours = fs.fstatSync(this.fd);
    if (named.ino === ours.ino && named.dev === ours.dev) return;
    const unreadable = this.last?.hash === "unreadable";
    const fd = fs.openSync(this.file, (unreadable ? fs.constants.O_WRONLY : fs.constants.O_RDWR) | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
    fs.closeSync(this.fd);
    this.fd = fd;
    if (!unreadable) this.last = undefined;
  }

  write(line: string): void {
    const append = () => {
      this.followRotation();
      // Under the lock: the previous line is the file's last line, so the chain stays linear.
      const size = fs.fstatSync(this.fd).size;
      let prev = this.last?.size === size || this.last?.hash === "unreadable" ? this.last.hash : undefined;
      let start = "";
      if (prev === undefined) {
        const tail = tailHash(this.fd, size);
        prev = tail.hash;
        if (!tail.newline) start = "\n"; // a torn line must not swallow ours
      }
      const text = chainLine(line, prev);
      const buf = Buffer.from(start + text);
      const n = fs.writeSync(this.fd, buf);
      if (n !== buf.length) throw new Error("short write to the audit log");
      if (this.last?.hash !== "unreadable") this.last = { size: size + n, hash: lineHash(Buffer.from(text.slice(0, -1))) };
    };
    // The lock lives in the state directory; when that is missing (the config names a state that
    // is not there, and the session is about to be refused for it) the line is still written.
    if (this.lockFile && (this.lockDirSeen ||= fs.existsSync(path.dirname(this.lockFile)))) withLock(this.lockFile, append);
    else append();
  }
}

export function openAudit(file: string, lockFile: string | undefined, base: Fields, create = true): Audit {
  let logger: Logger | undefined;
  let ok = true;
  try {
    const dest = new LockedAppend(file, lockFile, create);
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
