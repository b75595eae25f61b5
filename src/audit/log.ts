// The audit log: one JSON line per event (line.ts), appended with a single write(2) on an O_APPEND
// descriptor, under the log's lock file.
import fs from "node:fs";
import path from "node:path";
import { cleanValue } from "./sanitize.js";
import { auditLine, levelOf, members, type Fields } from "./line.js";
import { withLock } from "../lock.js";
import { chainLine, lineHash, tailHash, UNCHAINED } from "./chain.js";
import { Budget } from "./budget.js";

/** The `client` of root's own lines (seal, prune, verify --stored): never an address sshd gives a session. */
export const ROOT_CLIENT = "root";

export interface Audit {
  /**
   * Write one event; false if it was not written (the session's budget for its kind is spent, see
   * budget.ts, or the log is broken). Never throws: a line that cannot be written is reported on
   * stderr and to the handler given to whenBroken(), which ends the session.
   */
  event(event: string, fields?: Fields): boolean;
  readonly ok: boolean;
  /** The session's line budget: room() before an act whose line may never be dropped; counts() for session-end. */
  readonly budget: Budget;
  /** Run `fn` once, at the first line that cannot be written (a log that could not be opened: at once). */
  whenBroken(fn: (why: string) => void): void;
}

class LockedAppend {
  private fd: number;
  /**
   * The file's size after our last line, and that line: no need to read the tail again. Its hash is
   * taken when the next line needs it (a refused command writes one line and never does).
   */
  private last: { size: number; line: string; hash?: string } | undefined;
  /** Opened write-only (we may not read the log): every line is marked unchained. */
  private readonly unreadable: boolean = false;
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
      this.unreadable = true;
    }
    if (!fs.fstatSync(this.fd).isFile()) throw new Error(`${file} is not a regular file`);
  }
  /** Bytes of the lines written through this descriptor (the budget's measure). */
  bytes = 0;
  /**
   * After `audit --rotate` (done under this lock) the name is a new file: a session that opened the
   * old one writes on in the new one, never into the sealed rotated file. Returns the fstat of the
   * file written from now on.
   */
  private followRotation(): fs.Stats {
    const ours = fs.fstatSync(this.fd); // also the size the caller needs: one fstat per line, not two
    let named: fs.Stats;
    try {
      named = fs.lstatSync(this.file);
    } catch {
      return ours; // gone: keep the file we have
    }
    if (named.ino === ours.ino && named.dev === ours.dev) return ours;
    const fd = fs.openSync(this.file, (this.unreadable ? fs.constants.O_WRONLY : fs.constants.O_RDWR) | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
    fs.closeSync(this.fd);
    this.fd = fd;
    this.last = undefined;
    return fs.fstatSync(this.fd);
  }

  write(line: string): void {
    const append = () => {
      // Under the lock: the previous line is the file's last line, so the chain stays linear.
      const size = this.followRotation().size;
      let prev = this.unreadable ? UNCHAINED : this.last?.size === size ? (this.last.hash ??= lineHash(Buffer.from(this.last.line.slice(0, -1)))) : undefined;
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
      this.bytes += n;
      if (!this.unreadable) this.last = { size: size + n, line: text };
    };
    // The lock lives in the state directory; when that is missing (the config names a state that
    // is not there, and the session is about to be refused for it) the line is still written. A
    // lock that cannot be taken (held too long, or a full disk under it) fails the line: unlocked,
    // two writers could fork the hash chain.
    if (this.lockFile && (this.lockDirSeen ||= fs.existsSync(path.dirname(this.lockFile)))) withLock(this.lockFile, append, undefined, true);
    else append();
  }
}

export function openAudit(file: string, lockFile: string | undefined, base: Fields, create = true): Audit {
  let dest: LockedAppend | undefined;
  let broken: string | undefined;
  let onBroken: ((why: string) => void) | undefined;
  const budget = new Budget();
  const fail = (why: string) => {
    if (broken !== undefined) return;
    broken = why;
    if (onBroken) onBroken(why);
    else process.stderr.write(`validate-backup: ${why}\n`);
  };
  try {
    dest = new LockedAppend(file, lockFile, create);
  } catch (e) {
    fail(`audit log ${file} cannot be opened: ${(e as Error).message}`);
  }
  const baseJson = members(cleanValue(base) as Fields);
  const write = (event: string, fields: Fields): void => {
    dest!.write(auditLine(levelOf(fields), Date.now(), baseJson, cleanValue(fields) as Fields, event));
  };
  return {
    get ok() {
      return broken === undefined;
    },
    budget,
    whenBroken(fn) {
      onBroken = fn;
      if (broken !== undefined) fn(broken);
    },
    event(event, fields = {}) {
      if (!dest || broken !== undefined) return false;
      const verdict = budget.judge(event);
      try {
        if (verdict === "announce") write("budget", budget.notice(event));
        if (verdict !== "write") return false;
        const before = dest!.bytes;
        write(event, fields);
        budget.wrote(event, dest!.bytes - before);
        return true;
      } catch (e) {
        fail(`audit log write failed: ${(e as Error).message}`);
        return false;
      }
    },
  };
}
