// SFTP v3 on the wire (draft-ietf-secsh-filexfer-02, plus OpenSSH's PROTOCOL extensions): packet
// framing, field readers and reply writers. Pure: no I/O and no policy, so the fuzzer and the
// packet-level tests can drive it directly.
import { VbError } from "../errors.js";

export const FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201,
} as const;

export const FX = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

/** OPEN pflags. */
export const PF = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

export const VERSION = 3;
/** Largest value of a packet's length field; OpenSSH's sftp-server uses the same. */
export const MAX_PACKET = 256 * 1024;
/** Largest READ answered and WRITE accepted: a packet's worth, less room for the header fields. */
export const MAX_DATA = MAX_PACKET - 1024;

export function malformed(what: string): VbError {
  return new VbError("BAD_REQUEST", `malformed request: ${what}`);
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Reads the fields of one packet; every read is bounds-checked and names the field it wanted. */
export class Reader {
  constructor(
    private readonly buf: Buffer,
    public pos = 0,
  ) {}

  private need(n: number, what: string): void {
    if (this.buf.length - this.pos < n) throw malformed(`${what} runs past the end of the packet`);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A uint64 as a number; anything beyond 2^53 is no offset or size we could honour. */
  u64(what: string): number {
    this.need(8, what);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    if (hi >= 0x200000) throw malformed(`${what} is too large`);
    return hi * 0x100000000 + lo;
  }

  /** A string as raw bytes: a view into the packet, not a copy. */
  bytes(what: string): Buffer {
    const n = this.u32(what);
    this.need(n, what);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A string that must be UTF-8 (paths, extension names): invalid bytes are refused, never replaced. */
  text(what: string): string {
    const b = this.bytes(what);
    try {
      return utf8.decode(b);
    } catch {
      throw new VbError("BAD_REQUEST", `${what} is not valid UTF-8`);
    }
  }

  /** Whatever is left, unparsed (requests refused whatever their fields). */
  rest(): Buffer {
    const out = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return out;
  }

  /**
   * Bytes after the last field the request's declared lengths reach: the caller drops them, as
   * OpenSSH's sftp-server does (rclone's pkg/sftp sends a file's short last WRITE in a longer
   * message). A length pointing past the end was refused by need() already.
   */
  left(): number {
    return this.buf.length - this.pos;
  }
}

/** Builds one reply packet; the length field is filled in by finish(). */
export class Writer {
  private buf: Buffer;
  private pos = 5;

  constructor(type: number, size = 128) {
    this.buf = Buffer.allocUnsafe(Math.max(size, 16));
    this.buf[4] = type;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  u32(n: number): this {
    this.room(4);
    this.buf.writeUInt32BE(n >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  u64(n: number): this {
    this.room(8);
    const v = Math.max(0, Math.floor(n));
    this.buf.writeUInt32BE(Math.floor(v / 0x100000000) >>> 0, this.pos);
    this.buf.writeUInt32BE(v % 0x100000000, this.pos + 4);
    this.pos += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.u32(b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  str(s: string): this {
    const n = Buffer.byteLength(s);
    this.u32(n);
    this.room(n);
    this.buf.write(s, this.pos, "utf8");
    this.pos += n;
    return this;
  }

  finish(): Buffer {
    this.buf.writeUInt32BE(this.pos - 4, 0);
    return this.buf.subarray(0, this.pos);
  }
}

export function statusPacket(id: number, code: number, message: string): Buffer {
  return new Writer(FXP.STATUS, 32 + message.length * 3).u32(id).u32(code).str(message).str("en").finish();
}

// The commonest reply by far (every WRITE gets one): built once, copied with its id.
const OK_REPLY = statusPacket(0, FX.OK, "");

export function okPacket(id: number): Buffer {
  return stamped(OK_REPLY, id);
}

// Every download ends with one (a small file's second READ is answered by it).
const EOF_REPLY = statusPacket(0, FX.EOF, "end of file");

export function eofPacket(id: number): Buffer {
  return stamped(EOF_REPLY, id);
}

/** A copy of a prebuilt reply with the request's id. */
function stamped(reply: Buffer, id: number): Buffer {
  const b = Buffer.allocUnsafe(reply.length);
  reply.copy(b);
  b.writeUInt32BE(id, 5);
  return b;
}

export function handlePacket(id: number, handle: Buffer): Buffer {
  return new Writer(FXP.HANDLE, 16 + handle.length).u32(id).bytes(handle).finish();
}

export function versionPacket(extensions: ReadonlyArray<readonly [string, string]>): Buffer {
  const w = new Writer(FXP.VERSION, 512).u32(VERSION);
  for (const [name, data] of extensions) w.str(name).str(data);
  return w.finish();
}

/** Bytes before the data of a DATA reply: length, type, id, data length. */
export const DATA_HEADER = 13;

/** Fill in the header of a DATA reply whose n data bytes already sit at buf[DATA_HEADER..]. */
export function dataPacket(buf: Buffer, id: number, n: number): Buffer {
  buf.writeUInt32BE(9 + n, 0);
  buf[4] = FXP.DATA;
  buf.writeUInt32BE(id, 5);
  buf.writeUInt32BE(n, 9);
  return buf.subarray(0, DATA_HEADER + n);
}

/** A read smaller than this is not worth a system call: the buffered bytes move to the front first. */
const MIN_READ = 64 * 1024;

/**
 * Splits the input stream into packets without copying them. The reader reads straight into this
 * buffer, at space(), so a packet is returned as a view of where it landed; only the incomplete
 * packet at the end moves to the front, when the room behind it gets short. A packet is valid
 * until the next call to space() or push(): handlers work synchronously and copy whatever they
 * keep. A length of 0 or above the limit is a protocol error: nothing after it can be trusted to
 * be a packet boundary.
 */
export class Framer {
  // Four packets' worth: a read never brings more than one packet's worth (space() caps it), so
  // even with a read's packets held back (the output is full) there is room for the next one.
  private buf: Buffer;
  private start = 0; // first byte not yet returned as a packet
  private end = 0; // end of the bytes received

  constructor(private readonly max = MAX_PACKET) {
    this.buf = Buffer.allocUnsafe(4 * (max + 4));
  }

  /** Where the next read should put its bytes (never empty), at most one packet's worth. */
  space(): Buffer {
    const avail = this.end - this.start;
    if (avail === 0) this.start = this.end = 0;
    const want = Math.max(1, this.stillNeeded(avail));
    const room = this.buf.length - this.end;
    if (this.start > 0 && (room < MIN_READ || room < want)) this.moveTo(this.buf);
    // Only a caller that reads again while holding back a read's packets gets here (the pump
    // stops reading then): grown rather than handing out an empty buffer, which a socket would
    // take for the end of input.
    if (this.buf.length - this.end < want) this.moveTo(Buffer.allocUnsafe(avail + this.max + 4));
    return this.buf.subarray(this.end, this.end + Math.min(this.buf.length - this.end, this.max + 4));
  }

  /** n bytes were read into the buffer space() returned. */
  filled(n: number): void {
    this.end += n;
  }

  /** A chunk read elsewhere (a plain stream, a test): copied in. */
  push(chunk: Buffer): void {
    const avail = this.end - this.start;
    if (this.buf.length - this.end < chunk.length) {
      this.moveTo(this.buf.length < avail + chunk.length ? Buffer.allocUnsafe(avail + chunk.length + this.max + 4) : this.buf);
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
  }

  /** The bytes not yet returned, moved to the start of `into` (the same buffer or a bigger one). */
  private moveTo(into: Buffer): void {
    const avail = this.end - this.start;
    this.buf.copy(into, 0, this.start, this.end);
    this.buf = into;
    this.start = 0;
    this.end = avail;
  }

  /** The next whole packet (from its type byte on), or null if it has not all arrived yet. */
  next(): Buffer | null {
    const avail = this.end - this.start;
    if (avail < 4) return null;
    const len = this.checked(this.buf.readUInt32BE(this.start));
    if (avail < 4 + len) return null;
    const pkt = this.buf.subarray(this.start + 4, this.start + 4 + len);
    this.start += 4 + len;
    return pkt;
  }

  /** Bytes the packet at `start` still lacks (a bad length is next()'s to refuse). */
  private stillNeeded(avail: number): number {
    if (avail < 4) return 4 - avail;
    return 4 + Math.min(this.buf.readUInt32BE(this.start), this.max) - avail;
  }

  private checked(len: number): number {
    if (len === 0) throw new VbError("BAD_REQUEST", "protocol error: a packet of length 0");
    if (len > this.max) throw new VbError("BAD_REQUEST", `protocol error: a packet of ${len} bytes is larger than the limit of ${this.max}`);
    return len;
  }
}
