// One upload in flight: bytes go to a private temporary file in `state`; commit() makes it
// visible under its final name with link(2), or fails without touching anything.
import fs from "node:fs";
import crypto from "node:crypto";
import { VbError } from "../errors.js";
import type { VPath } from "./paths.js";
import type { Vault } from "./vault.js";
import { closeQuietly } from "../fsat.js";
import { guardUpload } from "../pgp/guard.js";
import { TrailingHash, OFFLOAD_AT, sha256OfFd } from "./hasher.js";

export interface Published {
  path: string;
  size: number;
  sha256: string;
}

export class Upload {
  private hash = crypto.createHash("sha256");
  private hashed = 0; // bytes written in order from offset 0: all hashed, here or by the worker
  private inOrder = true;
  /** Past OFFLOAD_AT bytes in order, a worker hashes the file instead (hasher.ts). */
  private trail: TrailingHash | undefined;
  size = 0;
  private times: { atime: number; mtime: number } | undefined;
  private done = false;

  constructor(
    private readonly vault: Vault,
    readonly v: VPath,
    private readonly parentFd: number,
    private readonly name: string,
    private readonly tmpPath: string,
    readonly fd: number,
    private mode: number,
  ) {}

  private get limits() {
    return this.vault.session.policy.limits;
  }

  write(data: Buffer, offset: number): void {
    if (this.done) throw new VbError("BAD_REQUEST", "the upload is already closed");
    if (!Number.isSafeInteger(offset) || offset < 0) throw new VbError("BAD_REQUEST", "bad write offset");
    const end = offset + data.length;
    if (end > this.limits.maxFileBytes) throw new VbError("QUOTA", `'${this.v.display}': file larger than the limit of ${this.limits.maxFileBytes} bytes`);
    const counters = this.vault.session.counters;
    if (counters.bytesIn + data.length > this.limits.maxSessionBytes)
      throw new VbError("QUOTA", `session upload limit of ${this.limits.maxSessionBytes} bytes reached`);
    let written = 0;
    while (written < data.length) written += fs.writeSync(this.fd, data, written, data.length - written, offset + written);
    counters.bytesIn += data.length;
    if (this.inOrder && offset === this.hashed) {
      this.hashed = end;
      if (this.trail) this.trail.advance(end);
      else {
        this.hash.update(data);
        if (end >= OFFLOAD_AT) this.trail = TrailingHash.start(this.fd);
      }
    } else if (this.inOrder) {
      this.inOrder = false;
      this.trail?.stop(); // hashed from the file at CLOSE instead
      this.trail = undefined;
    }
    if (end > this.size) this.size = end;
  }

  read(length: number, offset: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    const n = fs.readSync(this.fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  }

  /** SETSTAT on a file being uploaded: mode (masked) and times are kept for commit; size must match. */
  setAttrs(a: { mode?: number; atime?: number; mtime?: number; size?: number }): void {
    if (a.size !== undefined && a.size !== this.size)
      throw new VbError("NOT_ALLOWED", `append-only: '${this.v.display}' cannot be truncated or extended (size ${a.size} != ${this.size} written)`);
    if (a.mode !== undefined) this.mode = a.mode & 0o640;
    if (a.atime !== undefined || a.mtime !== undefined) {
      const now = Date.now() / 1000;
      this.times = { atime: a.atime ?? this.times?.atime ?? now, mtime: a.mtime ?? this.times?.mtime ?? now };
    }
  }

  private digest(): string {
    if (this.inOrder && this.hashed === this.size) {
      if (!this.trail) return this.hash.digest("hex");
      const hex = this.trail.finish(); // commit() called last(size) before its fsync
      this.trail = undefined;
      if (hex) return hex;
    }
    // Writes came out of order (or the worker failed): hash what is on disk.
    return sha256OfFd(this.fd, this.size);
  }

  /** fsync, link under the final name (never replacing), remove the temporary name. */
  commit(): Published {
    if (this.done) throw new VbError("BAD_REQUEST", "the upload is already closed");
    this.done = true;
    let st: fs.Stats | null = null;
    try {
      fs.fchmodSync(this.fd, this.mode);
      if (this.times) fs.futimesSync(this.fd, this.times.atime, this.times.mtime);
      this.trail?.last(this.size); // the worker finishes hashing while the disk catches up
      fs.fsyncSync(this.fd);
      guardUpload(this.vault.session, this.fd, this.size, this.v.display);
      const sha256 = this.digest();
      const file = fs.fstatSync(this.fd);
      this.vault.linkNew(this, this.parentFd, this.name, this.tmpPath, file);
      st = file; // the same inode under its final name
      const pub = { path: this.v.display, size: this.size, sha256 };
      this.vault.session.counters.published++;
      this.vault.session.audit.event("publish", pub);
      return pub;
    } catch (e) {
      this.vault.session.counters.skipped++;
      throw e;
    } finally {
      this.cleanup(st);
    }
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    this.vault.session.audit.event("upload-abandoned", { path: this.v.display, bytes: this.size });
    this.cleanup(null);
  }

  private cleanup(st: fs.Stats | null): void {
    this.trail?.stop(); // before the descriptor is closed: the worker may be reading it
    try {
      fs.unlinkSync(this.tmpPath);
    } catch {
      /* swept later */
    }
    closeQuietly(this.fd);
    // The new name reaches the disk with the directory's fsync at the end of the session (one per
    // directory, not one per file: what made small uploads crawl); the bytes were fsynced before.
    if (st) this.vault.syncDirLater(this.parentFd);
    else closeQuietly(this.parentFd);
    this.vault.uploadDone(this, st);
  }
}
