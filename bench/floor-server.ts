// Measurement only, never a server to run for real: it confines nothing, checks nothing and serves
// whatever its working directory holds. The least a node SFTP server can do for `sftp put -r` and
// `get -r` (downloads are the same in every mode: open, pread, close), to
// tell what node itself costs per small file from what our design and our implementation add
// (bench/floor.ts runs it beside our server and OpenSSH's sftp-server). Modes:
//   bare    OPEN creates the final name, WRITE writes, CLOSE closes and answers (sftp-server's work)
//   fsync   as bare, plus an fsync of each file on the thread pool after CLOSE is answered
//   design  the file system operations our design makes per file, and no others: the bytes go to a
//           temporary file in a state directory, CLOSE sets the mode, claims the name by link(2) and
//           answers; after the fsync on the thread pool the file is linked under its name, an arrival
//           line appended (and the record's name looked at), the temporary name and the claim
//           removed, and an audit line appended under a lock taken by link(2) (the log looked at)
// Usage: node floor-server.js MODE STATE_DIR   (cwd: the directory served)
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

const MODE = process.argv[2] ?? "bare";
const STATE = path.resolve(process.argv[3] ?? ".floor-state");
const TMP = path.join(STATE, "tmp");
const LOCKS = path.join(STATE, "locks");
const OWNER = path.join(TMP, "owner");
const FX = { OK: 0, NO_SUCH_FILE: 2, FAILURE: 4, OP_UNSUPPORTED: 8 } as const;

let arrivals = -1;
let audit = -1;
if (MODE === "design") {
  fs.rmSync(STATE, { recursive: true, force: true });
  fs.mkdirSync(TMP, { recursive: true });
  fs.mkdirSync(LOCKS);
  fs.writeFileSync(OWNER, `${process.pid}\n`);
  arrivals = fs.openSync(path.join(STATE, "arrivals.log"), "a", 0o600);
  audit = fs.openSync(path.join(STATE, "audit.log"), "a", 0o600);
}

interface Open {
  fd: number;
  name: string;
  tmp?: string;
  /** A file opened for reading. */
  read?: boolean;
  /** A directory being listed: the names not sent yet. */
  names?: string[];
}
const DIR_BATCH = 100;
const handles = new Map<string, Open>();
let nextHandle = 1;
let pending = 0;
let inputDone = false;

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};
const str = (s: string | Buffer) => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([u32(b.length), b]);
};
function send(type: number, id: number | undefined, ...parts: Buffer[]): void {
  const body = Buffer.concat([Buffer.from([type]), ...(id === undefined ? [] : [u32(id)]), ...parts]);
  fs.writeSync(1, Buffer.concat([u32(body.length), body]));
}
const status = (id: number, code: number, msg = "") => send(101, id, u32(code), str(msg), str(""));
function attrs(st: fs.Stats): Buffer {
  const hi = Math.floor(st.size / 2 ** 32);
  return Buffer.concat([u32(0xf), u32(hi), u32(st.size - hi * 2 ** 32), u32(st.uid), u32(st.gid), u32(st.mode), u32(st.atimeMs / 1000), u32(st.mtimeMs / 1000)]);
}

class Reader {
  constructor(
    private readonly b: Buffer,
    private o = 0,
  ) {}
  u32(): number {
    const v = this.b.readUInt32BE(this.o);
    this.o += 4;
    return v;
  }
  u64(): number {
    return this.u32() * 2 ** 32 + this.u32();
  }
  bytes(): Buffer {
    const n = this.u32();
    const v = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return v;
  }
}

function published(o: Open): void {
  fs.linkSync(o.tmp!, o.name);
  fs.writeSync(arrivals, `{"t":${Date.now()},"p":${JSON.stringify(o.name)}}\n`);
  fs.lstatSync(path.join(STATE, "arrivals.log"));
  fs.unlinkSync(o.tmp!);
  fs.unlinkSync(`${o.tmp}.claim`);
  const lock = path.join(LOCKS, "audit.lock");
  fs.linkSync(OWNER, lock);
  fs.fstatSync(audit);
  fs.lstatSync(path.join(STATE, "audit.log"));
  fs.writeSync(audit, `{"event":"publish","path":${JSON.stringify(o.name)}}\n`);
  fs.unlinkSync(lock);
}

function close(id: number, o: Open): void {
  if (MODE === "bare") {
    fs.closeSync(o.fd);
    return status(id, FX.OK);
  }
  if (MODE === "design") {
    fs.fchmodSync(o.fd, 0o640);
    fs.linkSync(OWNER, `${o.tmp}.claim`);
  }
  status(id, FX.OK);
  pending++;
  fs.fsync(o.fd, () => {
    if (MODE === "design") published(o);
    fs.closeSync(o.fd);
    if (--pending === 0 && inputDone) process.exit(0);
  });
}

function handle(p: Buffer): void {
  const type = p[0]!;
  if (type === 1) return send(2, undefined, u32(3));
  const r = new Reader(p, 1);
  const id = r.u32();
  try {
    switch (type) {
      case 16: {
        const full = path.resolve(r.bytes().toString() || ".");
        return send(104, id, u32(1), str(full), str(full), u32(0));
      }
      case 7:
      case 17: {
        const name = r.bytes().toString();
        return send(105, id, attrs(type === 7 ? fs.lstatSync(name) : fs.statSync(name)));
      }
      case 8:
        return send(105, id, attrs(fs.fstatSync(handles.get(r.bytes().toString())!.fd)));
      case 3: {
        const name = r.bytes().toString();
        const h = String(nextHandle++);
        if ((r.u32() & 0x2) === 0) {
          handles.set(h, { fd: fs.openSync(name, "r"), name, read: true });
          return send(102, id, str(h));
        }
        const tmp = MODE === "design" ? path.join(TMP, h) : undefined;
        handles.set(h, { fd: fs.openSync(tmp ?? name, "wx", tmp ? 0o600 : 0o640), name, tmp });
        return send(102, id, str(h));
      }
      case 6: {
        const o = handles.get(r.bytes().toString())!;
        const at = r.u64();
        const data = r.bytes();
        fs.writeSync(o.fd, data, 0, data.length, at);
        return status(id, FX.OK);
      }
      case 4: {
        const h = r.bytes().toString();
        const o = handles.get(h)!;
        handles.delete(h);
        if (o.names) return status(id, FX.OK);
        if (o.read) {
          fs.closeSync(o.fd);
          return status(id, FX.OK);
        }
        return close(id, o);
      }
      case 5: {
        const o = handles.get(r.bytes().toString())!;
        const at = r.u64();
        const data = Buffer.allocUnsafe(Math.min(r.u32(), 256 * 1024));
        const n = fs.readSync(o.fd, data, 0, data.length, at);
        if (n === 0) return status(id, 1, "EOF");
        return send(103, id, str(data.subarray(0, n)));
      }
      case 11: {
        const name = r.bytes().toString();
        const h = String(nextHandle++);
        handles.set(h, { fd: -1, name, names: fs.readdirSync(name) });
        return send(102, id, str(h));
      }
      case 12: {
        const o = handles.get(r.bytes().toString())!;
        const batch = o.names!.splice(0, DIR_BATCH);
        if (batch.length === 0) return status(id, 1, "EOF");
        const entries = batch.map((n) => Buffer.concat([str(n), str(n), attrs(fs.lstatSync(path.join(o.name, n)))]));
        return send(104, id, u32(batch.length), ...entries);
      }
      case 14:
        fs.mkdirSync(r.bytes().toString());
        return status(id, FX.OK);
      case 9:
      case 10:
        return status(id, FX.OK);
      default:
        return status(id, FX.OP_UNSUPPORTED, "not in the floor server");
    }
  } catch (e) {
    status(id, (e as NodeJS.ErrnoException).code === "ENOENT" ? FX.NO_SUCH_FILE : FX.FAILURE, (e as Error).message);
  }
}

let buf: Buffer = Buffer.alloc(0);
const input = new net.Socket({ fd: 0, readable: true, writable: false, allowHalfOpen: true });
input.on("data", (d: Buffer) => {
  buf = buf.length ? Buffer.concat([buf, d]) : d;
  while (buf.length >= 4) {
    const n = buf.readUInt32BE(0);
    if (buf.length < 4 + n) break;
    handle(buf.subarray(4, 4 + n));
    buf = buf.subarray(4 + n);
  }
});
input.on("end", () => {
  inputDone = true;
  if (pending === 0) process.exit(0);
});
