// The byte stream of one SFTP session: packets in, replies out, in order. Memory stays bounded
// whatever the client does: replies are written in batches (one writev per batch), and when the
// client does not take a batch at once, no further packet is handled and reading pauses until
// it has, so the kernel's buffers and the client's own flow control hold the rest.
import type { Writable } from "node:stream";
import { VbError } from "../errors.js";
import { Framer } from "./wire.js";
import { ReplyOutput } from "./output.js";
import type { Input } from "./input.js";
import type { Reply } from "./op.js";
import type { Throttle } from "../throttle.js";

const BATCH = 256 * 1024;

export type End = { kind: "eof" } | { kind: "idle" } | { kind: "output-closed" } | { kind: "protocol"; error: VbError };

export interface PumpOptions {
  input: Input;
  /** Where replies go: its descriptor is written directly, the stream holds what waits. */
  output: { fd: number; stream: Writable };
  idleMs: number;
  /** One packet (from its type byte on) -> its replies; throws only for protocol errors. */
  handle(pkt: Buffer): Reply;
  /** A packet that must wait before it is handled: the promise it waits for (it never rejects). */
  hold?(pkt: Buffer): Promise<void> | undefined;
  /** A reply has been written out (its buffer may be reused). */
  written?(b: Buffer): void;
  /** The key's bandwidth limit: bytes in and out are counted, and handling pauses while in debt. */
  throttle?: Throttle;
}

export function pump({ input, output, idleMs, handle, hold, written, throttle }: PumpOptions): Promise<End> {
  return new Promise((resolve) => {
    const framer = new Framer();
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let waiting = false; // a batch sits in the stream: handle nothing until it is out
    let paused = false; // the bandwidth limit is in debt: handle nothing until it has refilled
    let held: Buffer | undefined; // a packet waiting for hold()'s promise, handled first once it is kept
    let holding = false;
    let inputDone = false;
    let ended = false;

    const finish = (end: End) => {
      if (ended) return;
      ended = true;
      clearTimeout(idle);
      clearTimeout(pauseTimer);
      resolve(end);
    };
    // The idle timer is re-armed when it fires, not on every read: refreshing a timer per packet
    // was 3% of a small-file session.
    let lastInput = Date.now();
    const checkIdle = () => {
      const left = lastInput + idleMs - Date.now();
      if (left <= 0) finish({ kind: "idle" });
      else idle = setTimeout(checkIdle, left);
    };
    let idle = setTimeout(checkIdle, idleMs);

    const out = new ReplyOutput(output.fd, output.stream, written);
    /** Handle what waits, and read on if nothing holds us back. */
    const go = () => {
      work();
      if (!waiting && !paused && !holding && !inputDone && !ended) input.resume();
    };
    const flushed = () => {
      waiting = false;
      go();
    };

    let pauseTimer: NodeJS.Timeout | undefined;
    /** Count bytes against the limit; in debt, pause until it has refilled. */
    const spend = (n: number) => {
      const ms = throttle?.spend(n) ?? 0;
      if (ms <= 0 || paused) return;
      paused = true;
      pauseTimer = setTimeout(() => {
        paused = false;
        lastInput = Date.now(); // the pause was ours, not the client's idling
        go();
      }, ms);
    };

    const flush = () => {
      if (batch.length === 0) return;
      if (throttle) spend(batchBytes);
      const sent = out.send(batch, flushed);
      batch = [];
      batchBytes = 0;
      if (sent === "queued") waiting = true;
      else if (sent === "closed") finish({ kind: "output-closed" });
    };

    /** Handle what has arrived, as far as the output lets us. */
    const work = () => {
      if (ended) return;
      try {
        while (!waiting && !paused && !holding && !ended) {
          const pkt = held ?? framer.next();
          held = undefined;
          if (!pkt) break;
          const wait = hold?.(pkt);
          if (wait) {
            held = pkt;
            holding = true;
            void wait.then(() => {
              holding = false;
              go();
            });
            break;
          }
          const reply = handle(pkt);
          for (const b of Array.isArray(reply) ? reply : [reply]) {
            batch.push(b);
            batchBytes += b.length;
          }
          if (batchBytes >= BATCH) flush();
        }
      } catch (e) {
        flush();
        finish({ kind: "protocol", error: e instanceof VbError ? e : new VbError("BAD_REQUEST", `sftp protocol error: ${(e as Error).message}`) });
        return;
      }
      flush();
      // The session ends only once every reply is out: the process exits right after.
      if (inputDone && !waiting && !paused && !holding && !held) finish({ kind: "eof" });
    };

    input.start(
      framer,
      (n) => {
        if (ended) return false;
        lastInput = Date.now();
        if (throttle) spend(n);
        work();
        return !waiting && !paused && !holding;
      },
      () => {
        inputDone = true;
        work();
      },
    );
    output.stream.once("error", () => finish({ kind: "output-closed" }));
    output.stream.once("close", () => finish({ kind: "output-closed" }));
  });
}
