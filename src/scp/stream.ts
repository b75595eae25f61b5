// The byte plumbing of legacy scp: control lines, one-byte replies and raw file data share one
// stream in each direction. Input pulls chunks from stdin only when asked (so a fast client is
// held back by the pipe, and memory stays flat); Output waits for 'drain'.
import { once } from "node:events";
import type { Readable, Writable } from "node:stream";
import { VbError } from "../errors.js";
import { cleanString } from "../audit/sanitize.js";
import type { Throttle } from "../throttle.js";

const NL = 0x0a;
export const OK = 0;
export const WARN = 1;
export const FATAL = 2;

/** The peer ended the conversation itself (a \x02 line or a closed connection): nothing to reply. */
export class PeerGone extends VbError {}

/** The peer sent or took nothing for limits.idleSeconds: nothing to reply on the stream, but stderr says why. */
export class Idle extends PeerGone {
  constructor(what: string, ms: number) {
    super("QUOTA", `${what} for ${ms / 1000} s: idle session closed`);
  }
}

export class Input {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;

  constructor(
    stream: Readable,
    private readonly idleMs: number,
    /** The key's bandwidth limit, shared with the Output: no chunk is taken while it is in debt. */
    private readonly throttle?: Throttle,
  ) {
    this.it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  private async next(): Promise<IteratorResult<Buffer>> {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Idle("nothing received", this.idleMs)), this.idleMs);
    });
    try {
      return await Promise.race([this.it.next(), idle]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** True when at least one unread byte is buffered; false at end of input. */
  private async fill(): Promise<boolean> {
    while (this.buf.length === 0) {
      if (this.ended) return false;
      const r = await this.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      this.buf = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      await this.throttle?.pace(this.buf.length);
    }
    return true;
  }

  async byte(): Promise<number | null> {
    if (!(await this.fill())) return null;
    const b = this.buf[0]!;
    this.buf = this.buf.subarray(1);
    return b;
  }

  /** The next line without its '\n'; null if the input ends before its first byte. */
  async line(max: number): Promise<Buffer | null> {
    const parts: Buffer[] = [];
    let len = 0;
    for (;;) {
      if (!(await this.fill())) {
        if (len === 0) return null;
        throw new PeerGone("BAD_REQUEST", "connection closed in the middle of a control line");
      }
      const nl = this.buf.indexOf(NL);
      const take = nl === -1 ? this.buf.length : nl;
      if (len + take > max) throw new VbError("BAD_REQUEST", `protocol error: control line longer than ${max} bytes`);
      parts.push(this.buf.subarray(0, take));
      len += take;
      this.buf = this.buf.subarray(nl === -1 ? take : take + 1);
      if (nl !== -1) return Buffer.concat(parts, len);
    }
  }

  /** Hand the next n bytes to fn in the pieces they arrive in; false if the input ends first. */
  async pipe(n: number, fn: (piece: Buffer) => void): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (!(await this.fill())) return false;
      const take = Math.min(left, this.buf.length);
      fn(this.buf.subarray(0, take));
      this.buf = this.buf.subarray(take);
      left -= take;
    }
    return true;
  }

  close(): void {
    void this.it.return?.();
  }
}

export class Output {
  private broken: Error | undefined;

  constructor(
    private readonly stream: Writable,
    /** A client that takes nothing for this long is gone, as one that sends nothing (Input). */
    private readonly idleMs: number,
    /** The key's bandwidth limit, shared with the Input. */
    private readonly throttle?: Throttle,
  ) {
    stream.on("error", (e: Error) => (this.broken = e));
  }

  async write(data: Buffer | string): Promise<void> {
    if (this.broken) throw new PeerGone("IO", `connection lost (${this.broken.message})`);
    if (this.throttle) await this.throttle.pace(typeof data === "string" ? Buffer.byteLength(data) : data.length);
    if (this.stream.write(data)) return;
    const stalled = new AbortController();
    const timer = setTimeout(() => stalled.abort(), this.idleMs);
    try {
      await once(this.stream, "drain", { signal: stalled.signal });
    } catch (e) {
      if (!stalled.signal.aborted) throw e;
      throw new Idle("nothing read by the client", this.idleMs);
    } finally {
      clearTimeout(timer);
    }
  }

  ok(): Promise<void> {
    return this.write(Buffer.of(OK));
  }

  /** A message line; control characters are made visible so it stays one line. */
  say(level: typeof WARN | typeof FATAL, message: string): Promise<void> {
    return this.write(Buffer.concat([Buffer.of(level), Buffer.from(`scp: ${cleanString(message, 1000)}\n`)]));
  }
}

export type Reply = { ok: true } | { ok: false; message: string };

/** The peer's one-byte answer; a warning comes back as a value, a fatal one (or EOF) throws. */
export async function readReply(input: Input): Promise<Reply> {
  const b = await input.byte();
  if (b === null) throw new PeerGone("IO", "connection closed by the client");
  if (b === OK) return { ok: true };
  // Anything else is out of step (say, file data longer than its C line announced): stop here.
  if (b !== WARN && b !== FATAL) throw new VbError("BAD_REQUEST", `protocol error: expected a reply byte, got 0x${b.toString(16).padStart(2, "0")}`);
  const message = ((await input.line(4096)) ?? Buffer.alloc(0)).toString("utf8");
  if (b === FATAL) throw new PeerGone("BAD_REQUEST", `the client gave up: ${message}`);
  return { ok: false, message };
}
