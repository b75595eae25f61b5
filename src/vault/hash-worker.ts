// The worker side of hasher.ts: hashes one upload's temporary file, in order, as far as the
// session says it has been written, until told the last size (then it publishes the digest) or to
// stop (the upload was abandoned: the descriptor is about to be closed).
import fs from "node:fs";
import crypto from "node:crypto";
import { parentPort } from "node:worker_threads";
import { CTL, CLAIM, STATE, DONE, layout, type Job } from "./hash-shared.js";

const CHUNK = 1024 * 1024;
const buf = Buffer.allocUnsafe(CHUNK);

function run({ fd, shared }: Job): void {
  const { ctl, written, digest } = layout(shared);
  if (Atomics.compareExchange(ctl, CTL.claim, CLAIM.none, CLAIM.worker) !== CLAIM.none) return; // too late
  const hash = crypto.createHash("sha256");
  let pos = 0;
  let done: number = DONE.failed;
  try {
    for (;;) {
      const tick = Atomics.load(ctl, CTL.tick);
      const state = Atomics.load(ctl, CTL.state);
      if (state === STATE.stop) {
        done = DONE.stopped;
        break;
      }
      const upTo = Number(Atomics.load(written, 0));
      if (pos < upTo) {
        const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, upTo - pos), pos);
        if (n <= 0) break; // shorter than written: failed, the session hashes it itself
        hash.update(buf.subarray(0, n));
        pos += n;
        continue;
      }
      if (state === STATE.last) {
        digest.set(hash.digest());
        done = DONE.ok;
        break;
      }
      Atomics.wait(ctl, CTL.tick, tick, 1000);
    }
  } catch {
    done = DONE.failed;
  }
  Atomics.store(ctl, CTL.done, done);
  Atomics.notify(ctl, CTL.done);
}

parentPort?.on("message", run);
