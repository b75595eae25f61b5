// One upload in flight: bytes go to a private temporary file in `state`; commit() hands the finished
// file to the vault's admission (the same for every protocol), or fails without touching anything.
import fs from "node:fs";
import path from "node:path";
import { nodeCrypto } from "../lazy.js";
import { VbError, fromErrno } from "../errors.js";
import { SESSION_LOCK_PREFIX, type Session } from "../session.js";
import type { VPath } from "./paths.js";
import type { Arrival, Published } from "./admission.js";
import { closeQuietly } from "../fsat.js";
import { TrailingHash, OFFLOAD_AT, sha256OfFd } from "./hasher.js";
import type { Quota } from "./quota.js";
import { liveLocks } from "../lock.js";

/**
 * A big upload's bytes start on their way to the disk while more arrive: past this many bytes
 * written since the last flush began, an fdatasync runs on the thread pool (one at a time). CLOSE's
 * fsync, the one the promise rests on, then finds little left to write instead of the whole file
 * (a 256 MiB upload waited 0.2 s for it, a third of its time).
 */
const FLUSH_EVERY = 16 * 1024 * 1024;

export interface UploadInit {
  readonly v: VPath;
  /** The directory the name will appear in, opened now: the upload owns it until commit(). */
  readonly parentFd: number;
  readonly tmpPath: string;
  readonly fd: number;
  readonly mode: number;
  /** The inode the checks allowed this upload to replace (a duplicity resume). */
  readonly replaces: string | undefined;
  /** The vault's admission: the upload only hands its finished file over. */
  readonly admit: (a: Arrival) => Published;
  /** The same, answered before the name appears where the vault allows it (Vault.admitLater). */
  readonly admitLater: (a: Arrival) => Promise<boolean> | undefined;
  /** The key's quota and the free-space reserve: asked before each byte past the end is written. */
  readonly quota: Quota;
}

export class Upload {
  private hash = nodeCrypto().createHash("sha256");
  private hashed = 0; // bytes written in order from offset 0: all hashed, here or by the worker
  private inOrder = true;
  /** Past OFFLOAD_AT bytes in order, a worker hashes the file instead (hasher.ts). */
  private trail: TrailingHash | undefined;
  size = 0;
  private mode: number;
  private times: { atime: number; mtime: number } | undefined;
  /** Committed or abandoned. */
  ended = false;
  /** Set by a failed write: the upload can only be abandoned (see poison()). */
  private failed: VbError | undefined;
  /** Bytes counted against the quota as in flight (the highest end written), until published or freed. */
  private held = 0;
  /** Whether a worker may hash this upload (mayOffload), once asked. */
  private offload: boolean | undefined;
  /** Bytes written since the last early flush began (see FLUSH_EVERY). */
  private unflushed = 0;
  /** An early flush is running on the thread pool: the descriptor is closed only once it is done. */
  private flushing = false;
  private closeWhenFlushed = false;
  /** The vault removed the temporary name when it published the file. */
  private tmpGone = false;
  readonly v: VPath;
  readonly fd: number;

  constructor(
    private readonly session: Session,
    private readonly init: UploadInit,
  ) {
    this.v = init.v;
    this.fd = init.fd;
    this.mode = init.mode;
  }

  private get limits() {
    return this.session.policy.limits;
  }

  write(data: Buffer, offset: number): void {
    if (this.ended) throw new VbError("BAD_REQUEST", "the upload is already closed");
    if (this.failed) throw this.failed;
    try {
      this.put(data, offset);
    } catch (e) {
      this.poison(e);
    }
  }

  /**
   * A write that failed (ENOSPC, EIO, EDQUOT, a limit, a bad offset) leaves a hole the client will
   * not fill: the upload can never be published. Its bytes are freed now, not at CLOSE (on a full
   * disk every other upload is waiting for them), and every later WRITE and the CLOSE fail.
   */
  private poison(e: unknown): never {
    const err = fromErrno(e, this.v.display);
    this.failed = new VbError(err.code, `'${this.v.display}' was not stored: a write failed (${err.message})`);
    this.trail?.stop();
    this.trail = undefined;
    try {
      fs.ftruncateSync(this.fd, 0);
    } catch {
      /* unlinked below; closed at CLOSE */
    }
    this.unlinkTmp();
    this.release();
    this.session.audit.event("upload-failed", { path: this.v.display, code: err.code, reason: err.message, bytes: this.size });
    throw err;
  }

  /**
   * The client announced the size (scp's C line): claim it all now against the quota and the reserve,
   * so that a refusal comes before the data is sent. Throws QUOTA; the caller abandons the upload.
   */
  expect(size: number): void {
    if (size > this.held) {
      this.init.quota.grow(size - this.held);
      this.held = size;
    }
  }

  private put(data: Buffer, offset: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new VbError("BAD_REQUEST", "bad write offset");
    const end = offset + data.length;
    if (end > this.limits.maxFileBytes) throw new VbError("QUOTA", `'${this.v.display}': file larger than the limit of ${this.limits.maxFileBytes} bytes`);
    const counters = this.session.counters;
    if (counters.bytesIn + data.length > this.limits.maxSessionBytes)
      throw new VbError("QUOTA", `session upload limit of ${this.limits.maxSessionBytes} bytes reached`);
    this.expect(end);
    let written = 0;
    while (written < data.length) written += fs.writeSync(this.fd, data, written, data.length - written, offset + written);
    counters.bytesIn += data.length;
    if ((this.unflushed += data.length) >= FLUSH_EVERY && !this.flushing) this.flushEarly();
    if (this.inOrder && offset === this.hashed) {
      this.hashed = end;
      if (this.trail) this.trail.advance(end);
      else {
        this.hash.update(data);
        if (end >= OFFLOAD_AT && this.mayOffload()) this.trail = TrailingHash.start(this.fd);
      }
    } else if (this.inOrder) {
      this.inOrder = false;
      this.trail?.stop(); // hashed from the file at CLOSE instead
      this.trail = undefined;
    }
    if (end > this.size) this.size = end;
  }

  /**
   * The worker pays off only on a core nothing else wants: asked once per upload, not while another
   * session of the key is running. 20 sessions of 64 MiB at once spent 9.75 s of CPU (5.9 s) with
   * a worker each, starting it and reading each file back; 7.7-8.7 s (4.9-5.6 s) without.
   */
  private mayOffload(): boolean {
    if (this.offload === undefined) this.offload = liveLocks(path.join(this.session.policy.state, "locks"), SESSION_LOCK_PREFIX) <= 1;
    return this.offload;
  }

  private flushEarly(): void {
    this.unflushed = 0;
    this.flushing = true;
    fs.fdatasync(this.fd, () => {
      // A failure here changes nothing: CLOSE's own fsync decides.
      this.flushing = false;
      if (this.closeWhenFlushed) closeQuietly(this.fd);
    });
  }

  read(length: number, offset: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    const n = fs.readSync(this.fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  }

  /** SETSTAT on a file being uploaded: mode and times are kept for commit; size must match. */
  setAttrs(a: { mode?: number; atime?: number; mtime?: number; size?: number }): void {
    if (a.size !== undefined && a.size !== this.size)
      throw new VbError("NOT_ALLOWED", `append-only: '${this.v.display}' cannot be truncated or extended (size ${a.size} != ${this.size} written)`);
    if (a.mode !== undefined) this.mode = a.mode;
    if (a.atime !== undefined || a.mtime !== undefined) {
      const now = Date.now() / 1000;
      this.times = { atime: a.atime ?? this.times?.atime ?? now, mtime: a.mtime ?? this.times?.mtime ?? now };
    }
  }

  private digest(): string {
    if (this.inOrder && this.hashed === this.size) {
      if (!this.trail) return this.hash.digest("hex");
      const hex = this.trail.finish(); // commit() called last(size) before the fsync
      this.trail = undefined;
      if (hex) return hex;
    }
    // Writes came out of order (or the worker failed): hash what is on disk.
    return sha256OfFd(this.fd, this.size);
  }

  /** All bytes are there: the vault's admission publishes the file, or throws and stores nothing. */
  commit(): Published {
    return this.admitNow(this.finish());
  }

  /**
   * As commit(), but where the vault allows it the answer comes before the fsync and the link
   * (Vault.admitLater): the promise then tells, later, whether the name appeared; undefined: it
   * was published now. Throws, storing nothing, for whatever is refused before the answer.
   */
  commitLater(): Promise<boolean> | undefined {
    const arrival = this.finish();
    let later: Promise<boolean> | undefined;
    try {
      later = this.init.admitLater(arrival);
    } catch (e) {
      this.discard();
      throw e;
    }
    if (!later) {
      this.admitNow(arrival);
      return undefined;
    }
    return later.then((stored) => {
      if (stored) this.held = 0; // counted as stored
      this.discard(); // the descriptor stayed open for the fsync
      return stored;
    });
  }

  private admitNow(arrival: Arrival): Published {
    try {
      const pub = this.init.admit(arrival);
      this.held = 0; // the admission counted it as stored
      return pub;
    } finally {
      this.discard();
    }
  }

  /** The upload ends here: what the admission needs. */
  private finish(): Arrival {
    if (this.ended) throw new VbError("BAD_REQUEST", "the upload is already closed");
    if (this.failed) {
      this.abandon();
      throw this.failed;
    }
    this.ended = true;
    this.trail?.last(this.size); // the worker finishes hashing while the disk catches up
    const { v, fd, tmpPath, parentFd, replaces } = this.init;
    return { fd, v, size: this.size, src: tmpPath, mode: this.mode, times: this.times, uncounted: 0, sha256: () => this.digest(), dir: { fd: parentFd, replaces }, srcGone: () => void (this.tmpGone = true) };
  }

  abort(): void {
    if (this.ended) return;
    if (!this.failed) this.session.audit.event("upload-abandoned", { path: this.v.display, bytes: this.size });
    this.abandon();
  }

  private abandon(): void {
    this.ended = true;
    this.discard();
    closeQuietly(this.init.parentFd);
  }

  private discard(): void {
    this.trail?.stop(); // before the descriptor is closed: the worker may be reading it
    this.unlinkTmp();
    if (this.flushing) this.closeWhenFlushed = true; // its number must not be reused under it
    else closeQuietly(this.fd);
    this.release();
  }

  private release(): void {
    this.init.quota.shrink(this.held);
    this.held = 0;
  }

  private unlinkTmp(): void {
    if (this.tmpGone) return;
    try {
      fs.unlinkSync(this.init.tmpPath);
    } catch {
      /* gone already, or swept later */
    }
  }
}
