// The byte stream of one SFTP session: packets in, replies out, in order. Memory stays bounded
// whatever the client does: replies are written in batches (one writev per batch), no further
// packet is handled while more than OUT_HIGH bytes of replies wait to be written (a few pipelined
// READs of 255 KiB fill that quickly), and reading pauses meanwhile, so the kernel's pipe and the
// client's own flow control hold the rest.
import type { Writable } from "node:stream";
import { VbError } from "../errors.js";
import { Framer } from "./wire.js";
import type { Input } from "./input.js";
import type { Reply } from "./op.js";

const BATCH = 256 * 1024;
const OUT_HIGH = 2 * 1024 * 1024;

export type End = { kind: "eof" } | { kind: "idle" } | { kind: "output-closed" } | { kind: "protocol"; error: VbError };

export interface PumpOptions {
  input: Input;
  output: Writable;
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
    let draining = false;
    let inputDone = false;
    let ended = false;

    const finish = (end: End) => {
      if (ended) return;
      ended = true;
      clearTimeout(idle);
      resolve(end);
    };
    const idle = setTimeout(() => finish({ kind: "idle" }), idleMs);

    const flush = () => {
      if (batch.length === 0) return;
      output.cork();
      for (const b of batch) output.write(b, written && (() => written(b)));
      output.uncork();
      batch = [];
      batchBytes = 0;
    };

    // 'drain' is sure to come: with OUT_HIGH bytes queued, the last write() returned false.
    const waitDrain = () => {
      draining = true;
      output.once("drain", () => {
        draining = false;
        work();
        if (!draining && !inputDone && !ended) input.resume();
      });
    };

    /** Handle what has arrived, as far as the output lets us. */
    const work = () => {
      if (ended) return;
      try {
        while (!draining) {
          const pkt = framer.next();
          if (!pkt) break;
          const reply = handle(pkt);
          for (const b of Array.isArray(reply) ? reply : [reply]) {
            batch.push(b);
            batchBytes += b.length;
          }
          if (batchBytes >= BATCH) {
            flush();
            if (output.writableLength >= OUT_HIGH) waitDrain();
          }
        }
      } catch (e) {
        flush();
        finish({ kind: "protocol", error: e instanceof VbError ? e : new VbError("BAD_REQUEST", `sftp protocol error: ${(e as Error).message}`) });
        return;
      }
      flush();
      if (!draining && output.writableLength >= OUT_HIGH) waitDrain();
      if (inputDone && !draining) finish({ kind: "eof" });
    };

    input.start(
      (chunk) => {
        if (ended) return false;
        idle.refresh();
        framer.push(chunk);
        work();
        if (!draining) return true;
        framer.detach(); // the reader reuses its buffer: keep what we have not handled yet
        return false;
      },
      () => {
        inputDone = true;
        work();
      },
    );
    output.once("error", () => finish({ kind: "output-closed" }));
    output.once("close", () => finish({ kind: "output-closed" }));
  });
}
