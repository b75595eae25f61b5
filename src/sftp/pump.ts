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

const BATCH = 256 * 1024;

export type End = { kind: "eof" } | { kind: "idle" } | { kind: "output-closed" } | { kind: "protocol"; error: VbError };

export interface PumpOptions {
  input: Input;
  /** Where replies go: its descriptor is written directly, the stream holds what waits. */
  output: { fd: number; stream: Writable };
  idleMs: number;
  /** One packet (from its type byte on) -> its replies; throws only for protocol errors. */
  handle(pkt: Buffer): Reply;
  /** A reply has been written out (its buffer may be reused). */
  written?(b: Buffer): void;
}

export function pump({ input, output, idleMs, handle, written }: PumpOptions): Promise<End> {
  return new Promise((resolve) => {
    const framer = new Framer();
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let waiting = false; // a batch sits in the stream: handle nothing until it is out
    let inputDone = false;
    let ended = false;

    const finish = (end: End) => {
      if (ended) return;
      ended = true;
      clearTimeout(idle);
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
    const flushed = () => {
      waiting = false;
      work();
      if (!waiting && !inputDone && !ended) input.resume();
    };

    const flush = () => {
      if (batch.length === 0) return;
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
        while (!waiting && !ended) {
          const pkt = framer.next();
          if (!pkt) break;
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
      if (inputDone && !waiting) finish({ kind: "eof" });
    };

    input.start(
      framer,
      () => {
        if (ended) return false;
        lastInput = Date.now();
        work();
        return !waiting;
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
