// The session's temporary area (state/tmp/<sid>): every upload's bytes go to a new file here first,
// published by link(2) once complete.
//
// Making a file is a new inode, and on ext4 that waits behind the journal commits of the fsyncs
// this session's earlier uploads run beside it: 0.35 ms of every small upload's OPEN, against
// 0.03 ms for the rest of it. So from the second upload on, the next file is made ahead, on the
// thread pool, while the client sends the current one; an OPEN that finds it ready answers without
// waiting. One spare at most: an area never holds more than one inode nobody asked for.
import fs from "node:fs";
import path from "node:path";
import { closeQuietly } from "../fsat.js";
import { lockByLink } from "../lock.js";

const C = fs.constants;
const FLAGS = C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
/** The file the session's locks are linked to (lock.ts lockByLink). */
export const OWNER_FILE = "owner";

export interface TmpFile {
  readonly path: string;
  readonly fd: number;
}

export class TmpFiles {
  private made = false;
  private counter = 0;
  private spare: TmpFile | undefined;
  /** The spare being made on the thread pool: its name. */
  private making: string | undefined;
  private closed = false;

  constructor(readonly dir: string) {}

  /** A new, empty file of our own (mode 0600), open for reading and writing. Throws as open(2) does. */
  take(): TmpFile {
    this.make();
    const ready = this.spare;
    this.spare = undefined;
    const file = ready ?? this.makeNow();
    if (this.counter >= 2) this.makeAhead();
    return file;
  }

  /**
   * The area, made once; with it this session's later locks cost no new inode (lock.ts
   * lockByLink). A session that reads many files (an audit line, so a lock, each) asks for it too.
   */
  make(): void {
    if (this.made) return;
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.made = true;
    lockByLink(path.join(this.dir, OWNER_FILE));
  }

  private makeNow(): TmpFile {
    const p = path.join(this.dir, String(++this.counter));
    return { path: p, fd: fs.openSync(p, FLAGS, 0o600) };
  }

  private makeAhead(): void {
    if (this.making || this.spare || this.closed) return;
    const p = path.join(this.dir, String(++this.counter));
    this.making = p;
    fs.open(p, FLAGS, 0o600, (err, fd) => {
      this.making = undefined;
      if (err) return; // the next OPEN makes its own, and meets the error itself if it lasts
      if (this.closed) return discard({ path: p, fd });
      this.spare = { path: p, fd };
    });
  }

  /** Whether the entry `name` of the area is the area's own (the owner file, a spare made or being made), not an upload's. */
  isOwn(name: string): boolean {
    const p = path.join(this.dir, name);
    return name === OWNER_FILE || p === this.spare?.path || p === this.making;
  }

  /** End of session: the area and whatever is left in it go (a spare still being made is removed when it lands). */
  close(): void {
    this.closed = true;
    if (this.spare) discard(this.spare);
    this.spare = undefined;
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* swept by the next session */
    }
  }
}

function discard(f: TmpFile): void {
  closeQuietly(f.fd);
  try {
    fs.unlinkSync(f.path);
  } catch {
    /* the area is removed, or swept later */
  }
}
