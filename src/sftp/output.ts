// Replies leave by writev(2) on stdout's descriptor, in the same turn of the event loop that
// built them: Node's stream machinery costs more CPU per reply than the system call itself. When
// the client does not read fast enough (EAGAIN, or a short write), the rest goes to the stream,
// which waits until the descriptor takes it; until then nothing else is written directly and the
// pump handles no further packet, so replies keep their order and at most one batch waits.
// (Handling on while a few MiB wait in a queue of our own was tried: more CPU, and no faster.
// Tried again for issue 19 with 0.26, 1 and 4 MiB read ahead, in our own queue or the stream's,
// with and without a turn of the event loop between READs: under SCHED_FIFO, where the shared
// machine's noise is smallest, every variant was 5-20% slower per GiB than waiting, the more
// read ahead the slower; under normal scheduling no difference outside the noise.)
import fs from "node:fs";
import type { Writable } from "node:stream";

/** writev(2) takes at most this many buffers at once (Linux's IOV_MAX). */
const IOV_MAX = 1024;

export type Sent = "sent" | "queued" | "closed";

export class ReplyOutput {
  private closed = false;

  constructor(
    private readonly fd: number,
    /** The same descriptor as a stream; creating it made the descriptor non-blocking. */
    private readonly stream: Writable,
    /** A reply has been written out (its buffer may be reused). */
    private readonly written: (b: Buffer) => void = () => {},
  ) {}

  /**
   * Write the replies in order (`bufs` is the caller's to drop: a partly written entry is replaced
   * by its rest). "queued": some wait in the stream, and `flushed` runs once they are out.
   * "closed": the client is gone; nothing more will be written.
   */
  send(bufs: Buffer[], flushed: () => void): Sent {
    if (this.closed) return "closed";
    let i = 0;
    if (this.stream.writableLength === 0) {
      try {
        while (i < bufs.length) {
          const group = bufs.slice(i, i + IOV_MAX);
          let n = fs.writevSync(this.fd, group);
          const short = n < group.reduce((sum, b) => sum + b.length, 0);
          for (const b of group) {
            if (n < b.length) break;
            n -= b.length;
            this.written(b);
            i++;
          }
          if (!short) continue;
          if (n > 0) bufs[i] = bufs[i]!.subarray(n); // a view: the pool still knows its buffer
          break; // the descriptor is full: the stream waits for room
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") {
          this.closed = true;
          return "closed";
        }
      }
      if (i === bufs.length) return "sent";
    }
    this.stream.cork();
    for (let k = i; k < bufs.length; k++) {
      const b = bufs[k]!;
      const last = k === bufs.length - 1;
      this.stream.write(b, () => {
        this.written(b);
        if (last) flushed();
      });
    }
    this.stream.uncork();
    return "queued";
  }
}
