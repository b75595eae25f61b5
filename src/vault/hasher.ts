// SHA-256 of a big upload on the second core. Past OFFLOAD_AT bytes, a worker thread hashes the
// temporary file from the start, trailing the writes (it reads what the page cache already
// holds), so CLOSE waits only for the last few chunks instead of the session hashing every
// WRITE on the one thread that also serves the client. One upload at a time: others hash inline.
// The descriptor stays the session's: it is closed only after the worker has let go of it.
import fs from "node:fs";
import type { Worker } from "node:worker_threads";
import { nodeCrypto, workerThreads } from "../lazy.js";
import { CTL, CLAIM, STATE, DONE, SHARED_BYTES, layout, type Job } from "./hash-shared.js";

const HASH_CHUNK = 1024 * 1024;

/**
 * SHA-256 (hex) of the first `size` bytes of the open file, read in chunks: memory stays flat. A
 * caller hashing many files passes its own `buf`, used again for each.
 */
export function sha256OfFd(fd: number, size: number, buf = Buffer.allocUnsafe(Math.min(HASH_CHUNK, Math.max(size, 1)))): string {
  const h = nodeCrypto().createHash("sha256");
  for (let pos = 0; pos < size; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
    if (n <= 0) break;
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return h.digest("hex");
}

/** Below this the worker's start-up costs more than it saves. */
export const OFFLOAD_AT = 16 * 1024 * 1024;
/** The worker is woken after this much more data (or at the end), not after every WRITE. */
const WAKE_EVERY = 1024 * 1024;
/** A worker that does not answer within this long is taken to be lost; the session hashes itself. */
const WAIT_MS = 60_000;

let worker: Worker | undefined;
let busy = false;

function theWorker(): Worker {
  if (!worker) {
    worker = new (workerThreads().Worker)(new URL("./hash-worker.js", import.meta.url));
    worker.unref(); // never keeps a finished session alive
    worker.on("error", () => (worker = undefined));
  }
  return worker;
}

export class TrailingHash {
  private readonly view;
  private woken = 0;
  private open = true;

  private constructor(shared: SharedArrayBuffer) {
    this.view = layout(shared);
  }

  /** A worker hashing `fd`, or undefined (busy with another upload, or no worker to be had). */
  static start(fd: number): TrailingHash | undefined {
    if (busy) return undefined;
    const shared = new SharedArrayBuffer(SHARED_BYTES);
    try {
      theWorker().postMessage({ fd, shared } satisfies Job);
    } catch {
      return undefined;
    }
    busy = true;
    return new TrailingHash(shared);
  }

  /** Bytes [0, size) are written. */
  advance(size: number): void {
    Atomics.store(this.view.written, 0, BigInt(size));
    if (size - this.woken < WAKE_EVERY) return;
    this.woken = size;
    this.wake();
  }

  private wake(): void {
    Atomics.add(this.view.ctl, CTL.tick, 1);
    Atomics.notify(this.view.ctl, CTL.tick);
  }

  /** All size bytes are written: the worker may finish while the session does something else. */
  last(size: number): void {
    Atomics.store(this.view.written, 0, BigInt(size));
    Atomics.store(this.view.ctl, CTL.state, STATE.last);
    this.wake();
  }

  /** The hex digest of the size bytes last() announced, or undefined if the worker failed (the caller hashes itself). */
  finish(): string | undefined {
    return this.end(STATE.last) === DONE.ok ? Buffer.from(this.view.digest).toString("hex") : undefined;
  }

  /** The upload is abandoned, or will be hashed another way: the worker lets go of the descriptor. */
  stop(): void {
    this.end(STATE.stop);
  }

  private end(state: number): number {
    if (!this.open) return DONE.failed;
    this.open = false;
    const { ctl } = this.view;
    busy = false;
    // A worker that has not started on the job (still booting, or dead) never will.
    if (Atomics.compareExchange(ctl, CTL.claim, CLAIM.none, CLAIM.session) === CLAIM.none) return DONE.failed;
    Atomics.store(ctl, CTL.state, state);
    this.wake();
    const deadline = Date.now() + WAIT_MS;
    let done: number;
    while ((done = Atomics.load(ctl, CTL.done)) === DONE.no && Date.now() < deadline) Atomics.wait(ctl, CTL.done, DONE.no, 100);
    if (done === DONE.no) {
      // Lost: the worker may still hold the descriptor, so it is never used again.
      void worker?.terminate();
      worker = undefined;
    }
    return done;
  }
}
