// A raw SFTP v3 client for tests: it builds packets byte by byte (so a test can send anything,
// well-formed or not) and reads replies. It talks to the real gate, run as the test user with
// SSH_ORIGINAL_COMMAND set to the subsystem string, or to OpenSSH's own sftp-server (to check this
// client against the reference). It never trusts the server: every reply is bounds-checked.
import fs from "node:fs";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { BIN, gateIds, sandbox, type Sandbox, type Teardownable } from "./env.js";

export const SUBSYSTEM = "/usr/lib/openssh/sftp-server";

/** Request and reply types (draft-ietf-secsh-filexfer-02). */
export const T = {
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
export const FX_NAME: Record<number, string> = Object.fromEntries(Object.entries(FX).map(([k, v]) => [v, k]));

/** OPEN pflags. */
export const PF = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

/** ATTRS flags. */
export const AF = { SIZE: 0x01, UIDGID: 0x02, PERMISSIONS: 0x04, ACMODTIME: 0x08, EXTENDED: 0x80000000 } as const;

export type Bytes = string | Buffer;

export interface Attrs {
  size?: bigint | number;
  uid?: number;
  gid?: number;
  perm?: number;
  atime?: number;
  mtime?: number;
  ext?: [Bytes, Bytes][];
}

// ---- encoding: each returns the bytes of one field, so tests can splice fields freely ----

export function u8(n: number): Buffer {
  return Buffer.from([n & 0xff]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function u64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(n)));
  return b;
}

export function str(s: Bytes): Buffer {
  const b = typeof s === "string" ? Buffer.from(s, "utf8") : s;
  return Buffer.concat([u32(b.length), b]);
}

export function attrs(a: Attrs = {}): Buffer {
  let flags = 0;
  const parts: Buffer[] = [];
  if (a.size !== undefined) {
    flags |= AF.SIZE;
    parts.push(u64(a.size));
  }
  if (a.uid !== undefined || a.gid !== undefined) {
    flags |= AF.UIDGID;
    parts.push(u32(a.uid ?? 0), u32(a.gid ?? 0));
  }
  if (a.perm !== undefined) {
    flags |= AF.PERMISSIONS;
    parts.push(u32(a.perm));
  }
  if (a.atime !== undefined || a.mtime !== undefined) {
    flags |= AF.ACMODTIME;
    parts.push(u32(a.atime ?? 0), u32(a.mtime ?? 0));
  }
  if (a.ext) {
    flags |= AF.EXTENDED;
    parts.push(u32(a.ext.length), ...a.ext.flatMap(([k, v]) => [str(k), str(v)]));
  }
  return Buffer.concat([u32(flags), ...parts]);
}

/** A whole packet: length, type, then the fields as given (the id is just the first field). */
export function packet(type: number, ...fields: Buffer[]): Buffer {
  const body = Buffer.concat([u8(type), ...fields]);
  return Buffer.concat([u32(body.length), body]);
}

// ---- decoding ----

export class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError(`reply truncated: need ${n} bytes at ${this.pos} of ${this.buf.length}`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(): Buffer {
    const n = this.u32();
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  string(): string {
    return this.bytes().toString("utf8");
  }
  attrs(): Attrs {
    const flags = this.u32();
    const a: Attrs = {};
    if (flags & AF.SIZE) a.size = this.u64();
    if (flags & AF.UIDGID) {
      a.uid = this.u32();
      a.gid = this.u32();
    }
    if (flags & AF.PERMISSIONS) a.perm = this.u32();
    if (flags & AF.ACMODTIME) {
      a.atime = this.u32();
      a.mtime = this.u32();
    }
    if (flags & AF.EXTENDED) {
      const n = this.u32();
      a.ext = [];
      for (let i = 0; i < n; i++) a.ext.push([this.bytes(), this.bytes()]);
    }
    return a;
  }
  get rest(): Buffer {
    return this.buf.subarray(this.pos);
  }
}

export interface NameEntry {
  name: string;
  longname: string;
  attrs: Attrs;
}

export interface Reply {
  type: number;
  id: number;
  /** Everything after the id, undecoded. */
  body: Buffer;
  status?: { code: number; message: string; lang: string };
  handle?: Buffer;
  data?: Buffer;
  names?: NameEntry[];
  attrs?: Attrs;
}

export function decodeReply(payload: Buffer): Reply {
  const r = new Reader(payload);
  const type = r.u8();
  const id = r.u32();
  const reply: Reply = { type, id, body: r.rest };
  switch (type) {
    case T.STATUS:
      reply.status = { code: r.u32(), message: r.string(), lang: r.pos < payload.length ? r.string() : "" };
      break;
    case T.HANDLE:
      reply.handle = r.bytes();
      break;
    case T.DATA:
      reply.data = r.bytes();
      break;
    case T.NAME: {
      const n = r.u32();
      if (n > 100_000) throw new RangeError(`NAME count ${n} is absurd`);
      reply.names = [];
      for (let i = 0; i < n; i++) reply.names.push({ name: r.string(), longname: r.string(), attrs: r.attrs() });
      break;
    }
    case T.ATTRS:
      reply.attrs = r.attrs();
      break;
  }
  return reply;
}

/** "OK", "PERMISSION_DENIED: append-only: …" or "HANDLE": for test messages. */
export function describe(r: Reply): string {
  if (r.status) return `${FX_NAME[r.status.code] ?? r.status.code}: ${r.status.message}`;
  return Object.entries(T).find(([, v]) => v === r.type)?.[0] ?? `type ${r.type}`;
}

// ---- the sandbox SFTP attacks run in ----

/** Files every SFTP attack sandbox starts with: what a session must never change. */
export const WORLD_FILES = { "existing.gpg": "old bytes that must never change\n", "dir/inner.gpg": "inner\n" };

/**
 * A sandbox with WORLD_FILES (plus `files`), an empty directory and three links planted in the root
 * that point outside it: a directory, a file, and /etc/passwd.
 */
export function hostileWorld(t: Teardownable, opts: { config?: Record<string, unknown>; files?: Record<string, string> } = {}): Sandbox {
  const sb = sandbox(t, { files: { ...WORLD_FILES, ...opts.files }, config: opts.config });
  const { uid, gid } = gateIds();
  const plants: Array<[string, (p: string) => void]> = [
    ["empty", (p) => fs.mkdirSync(p, { mode: 0o750 })],
    ["escape", (p) => fs.symlinkSync(sb.outside, p)],
    ["escape-file", (p) => fs.symlinkSync(path.join(sb.outside, "canary.txt"), p)],
    ["escape-abs", (p) => fs.symlinkSync("/etc/passwd", p)],
  ];
  for (const [name, make] of plants) {
    make(path.join(sb.root, name));
    fs.lchownSync(path.join(sb.root, name), uid, gid);
  }
  return sb;
}

// ---- the client ----

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

export class Disconnected extends Error {
  constructor(readonly exit: Exit | undefined) {
    super(`the server went away (exit ${exit?.code ?? "?"}, signal ${exit?.signal ?? "none"}): ${exit?.stderr.slice(-300) ?? ""}`);
  }
}

const MAX_REPLY = 1024 * 1024; // far above any sane reply: a longer length is a server bug

export class SftpClient {
  private inbuf: Buffer = Buffer.alloc(0);
  private waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private exitInfo: Exit | undefined;
  /** Replies no request waited for (VERSION, or answers to packets sent with sendRaw). */
  readonly unclaimed: Reply[] = [];
  /** Every reply, claimed or not, in arrival order (ids only): for checking reply order. */
  readonly order: number[] = [];
  replies = 0;
  stderr = "";
  readonly exited: Promise<Exit>;
  private onReply: ((r: Reply) => void) | undefined;
  protocolError: string | undefined;
  /** Bytes appended to every request after its last field (OpenSSH's server ignores them; so do we). */
  trailer: Buffer = Buffer.alloc(0);

  constructor(readonly child: ChildProcess) {
    child.stdin!.on("error", () => {}); // EPIPE after the server hung up is expected in attack tests
    child.stdout!.on("data", (d: Buffer) => this.feed(d));
    child.stderr!.on("data", (d: Buffer) => {
      if (this.stderr.length < 1 << 20) this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => {
      child.on("close", (code, signal) => {
        this.exitInfo = { code, signal, stderr: this.stderr };
        for (const w of this.waiting.values()) w.reject(new Disconnected(this.exitInfo));
        this.waiting.clear();
        resolve(this.exitInfo);
      });
    });
  }

  /** Our gate as the unprivileged test user, as sshd would start it for `sftp`. */
  static gate(sb: Sandbox, command = SUBSYSTEM): SftpClient {
    const { name } = gateIds();
    const env: NodeJS.ProcessEnv = { PATH: "/usr/bin:/bin", SSH_CLIENT: "127.0.0.1 50000 22", SSH_ORIGINAL_COMMAND: command };
    const argv = name ? ["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "--config", sb.config] : [BIN, "--config", sb.config];
    return new SftpClient(spawn(argv[0]!, argv.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] }));
  }

  /** OpenSSH's sftp-server in `cwd`: the reference this client is checked against. */
  static openssh(cwd: string, args: string[] = []): SftpClient {
    return new SftpClient(spawn(SUBSYSTEM, args, { cwd, env: { PATH: "/usr/bin:/bin" }, stdio: ["pipe", "pipe", "pipe"] }));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /** Peak resident memory of the server so far, in KiB (VmHWM), or undefined once it is gone. */
  peakRssKiB(): number | undefined {
    try {
      const status = fs.readFileSync(`/proc/${this.pid}/status`, "utf8");
      const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  private feed(d: Buffer): void {
    this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, d]) : d;
    while (this.inbuf.length >= 4) {
      const len = this.inbuf.readUInt32BE(0);
      if (len < 5 || len > MAX_REPLY) {
        this.protocolError = `reply with length ${len}`;
        this.child.kill("SIGKILL");
        return;
      }
      if (this.inbuf.length < 4 + len) return;
      const payload = this.inbuf.subarray(4, 4 + len);
      this.inbuf = this.inbuf.subarray(4 + len);
      let reply: Reply;
      try {
        reply = decodeReply(payload);
      } catch (e) {
        this.protocolError = `undecodable reply: ${(e as Error).message}`;
        this.child.kill("SIGKILL");
        return;
      }
      this.replies++;
      this.order.push(reply.id);
      this.onReply?.(reply);
      const w = reply.type === T.VERSION ? undefined : this.waiting.get(reply.id);
      if (w) {
        this.waiting.delete(reply.id);
        w.resolve(reply);
      } else if (this.unclaimed.length < 10_000) this.unclaimed.push(reply);
    }
  }

  /** Send bytes as they are. */
  sendRaw(b: Buffer): boolean {
    if (!this.alive || this.child.stdin!.destroyed) return false;
    return this.child.stdin!.write(b);
  }

  /** Resolves when the pipe to the server can take more (for senders of many packets). */
  drain(): Promise<void> {
    if (!this.alive || !this.child.stdin!.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.child.stdin!.off("drain", done);
        this.child.off("close", done);
        resolve();
      };
      this.child.stdin!.on("drain", done);
      this.child.on("close", done);
    });
  }

  /** Every reply, as it arrives (the fuzzer's model listens here). */
  listen(fn: ((r: Reply) => void) | undefined): void {
    this.onReply = fn;
  }

  allocId(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    return id;
  }

  /** Send one request of `type` with a fresh id and wait for its reply (rejects with Disconnected). */
  request(type: number, ...fields: Buffer[]): Promise<Reply> {
    const id = this.allocId();
    return this.requestWithId(id, type, ...fields);
  }

  requestWithId(id: number, type: number, ...fields: Buffer[]): Promise<Reply> {
    if (!this.alive) return Promise.reject(new Disconnected(this.exitInfo));
    const p = new Promise<Reply>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.sendRaw(packet(type, u32(id), ...fields, this.trailer));
    return p;
  }

  /** The reply to a request or the disconnect it caused, whichever comes: for malformed input. */
  async replyOrExit(p: Promise<Reply>, timeoutMs = 10_000): Promise<Reply | Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply and no disconnect within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([p.catch((e: unknown) => (e instanceof Disconnected ? this.exited : Promise.reject(e))), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async init(version = 3): Promise<{ version: number; extensions: Map<string, string> }> {
    const got = new Promise<Reply>((resolve, reject) => {
      const check = () => {
        const i = this.unclaimed.findIndex((r) => r.type === T.VERSION);
        if (i >= 0) return resolve(this.unclaimed.splice(i, 1)[0]!);
        if (!this.alive) return reject(new Disconnected(this.exitInfo));
        setTimeout(check, 5);
      };
      check();
    });
    this.sendRaw(packet(T.INIT, u32(version)));
    const v = await got;
    // VERSION has no id: what decodeReply read as the id is the version number.
    const r = new Reader(v.body);
    const extensions = new Map<string, string>();
    while (r.pos < r.buf.length) extensions.set(r.string(), r.string());
    return { version: v.id, extensions };
  }

  // ---- one method per request, fields in the draft's order ----
  open(path: Bytes, pflags: number, a: Attrs = {}): Promise<Reply> {
    return this.request(T.OPEN, str(path), u32(pflags), attrs(a));
  }
  close(handle: Buffer): Promise<Reply> {
    return this.request(T.CLOSE, str(handle));
  }
  read(handle: Buffer, offset: number | bigint, length: number): Promise<Reply> {
    return this.request(T.READ, str(handle), u64(offset), u32(length));
  }
  write(handle: Buffer, offset: number | bigint, data: Bytes): Promise<Reply> {
    return this.request(T.WRITE, str(handle), u64(offset), str(data));
  }
  lstat(path: Bytes): Promise<Reply> {
    return this.request(T.LSTAT, str(path));
  }
  stat(path: Bytes): Promise<Reply> {
    return this.request(T.STAT, str(path));
  }
  fstat(handle: Buffer): Promise<Reply> {
    return this.request(T.FSTAT, str(handle));
  }
  setstat(path: Bytes, a: Attrs): Promise<Reply> {
    return this.request(T.SETSTAT, str(path), attrs(a));
  }
  fsetstat(handle: Buffer, a: Attrs): Promise<Reply> {
    return this.request(T.FSETSTAT, str(handle), attrs(a));
  }
  opendir(path: Bytes): Promise<Reply> {
    return this.request(T.OPENDIR, str(path));
  }
  readdir(handle: Buffer): Promise<Reply> {
    return this.request(T.READDIR, str(handle));
  }
  remove(path: Bytes): Promise<Reply> {
    return this.request(T.REMOVE, str(path));
  }
  mkdir(path: Bytes, a: Attrs = {}): Promise<Reply> {
    return this.request(T.MKDIR, str(path), attrs(a));
  }
  rmdir(path: Bytes): Promise<Reply> {
    return this.request(T.RMDIR, str(path));
  }
  realpath(path: Bytes): Promise<Reply> {
    return this.request(T.REALPATH, str(path));
  }
  rename(from: Bytes, to: Bytes): Promise<Reply> {
    return this.request(T.RENAME, str(from), str(to));
  }
  readlink(path: Bytes): Promise<Reply> {
    return this.request(T.READLINK, str(path));
  }
  /** Fields in wire order; OpenSSH's client puts the link target first, the draft the link path. */
  symlink(first: Bytes, second: Bytes): Promise<Reply> {
    return this.request(T.SYMLINK, str(first), str(second));
  }
  extended(name: string, ...fields: Buffer[]): Promise<Reply> {
    return this.request(T.EXTENDED, str(name), ...fields);
  }

  // ---- conveniences for the common sequences ----

  /** Open for reading and return the handle, or throw with the status. */
  async openHandle(path: Bytes, pflags: number, a: Attrs = {}): Promise<Buffer> {
    const r = await this.open(path, pflags, a);
    if (!r.handle) throw new Error(`OPEN ${String(path)} failed: ${describe(r)}`);
    return r.handle;
  }

  /**
   * Wait until every upload the server answered before its link (Vault.admitLater) has its name: a
   * REALPATH is answered only after them. A test looking at the filesystem itself, behind a live
   * session's CLOSE, asks this first; the client's own requests need not.
   */
  async settle(): Promise<void> {
    const r = await this.realpath(".");
    if (!r.names) throw new Error(`REALPATH . failed: ${describe(r)}`);
  }

  /** A complete upload the way OpenSSH's `put` does it; returns the CLOSE reply. */
  async put(path: Bytes, content: Bytes, pflags: number = PF.WRITE | PF.CREAT | PF.TRUNC): Promise<Reply> {
    const h = await this.openHandle(path, pflags, { perm: 0o644 });
    const data = typeof content === "string" ? Buffer.from(content) : content;
    for (let off = 0; off < data.length || off === 0; off += 32768) {
      const w = await this.write(h, off, data.subarray(off, off + 32768));
      if (w.status?.code !== FX.OK) throw new Error(`WRITE failed: ${describe(w)}`);
      if (data.length === 0) break;
    }
    return this.close(h);
  }

  /** Read a whole file through a handle. */
  async get(path: Bytes): Promise<Buffer> {
    const h = await this.openHandle(path, PF.READ);
    const parts: Buffer[] = [];
    for (let off = 0; ; ) {
      const r = await this.read(h, off, 32768);
      if (r.status?.code === FX.EOF) break;
      if (!r.data) throw new Error(`READ failed: ${describe(r)}`);
      parts.push(r.data);
      off += r.data.length;
    }
    await this.close(h);
    return Buffer.concat(parts);
  }

  /** End the session the polite way (EOF on stdin) and wait for the exit. */
  async end(timeoutMs = 20_000): Promise<Exit> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<Exit> {
    this.child.kill(signal);
    return this.exited;
  }
}

/** Signs that the server died of a bug rather than refusing: a signal, or a JavaScript stack trace. */
export function crashSigns(exit: Exit): string | undefined {
  if (exit.signal && exit.signal !== "SIGKILL") return `killed by ${exit.signal}`;
  const trace = /(^\s+at .+:\d+:\d+\)?$)|Uncaught|TypeError|RangeError|ReferenceError|SyntaxError|Maximum call stack|heap out of memory|FATAL ERROR/m.exec(exit.stderr);
  if (trace) return `stack trace or fatal error in stderr: ${trace[0].trim()}`;
  return undefined;
}
