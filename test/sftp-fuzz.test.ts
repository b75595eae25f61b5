// Packet-level fuzzing of the SFTP server (issue 3, acceptance 4): at least 100,000 generated and
// mutated packets from a seeded PRNG, pipelined through a handful of server processes, each batch
// ending with a framing attack or an EOF. After every process:
//   - it did not crash (no signal, no stack trace) and closed its session properly;
//   - replies came back one per request, in order, with the request's id;
//   - nothing outside the root changed (siblings, fake home, the sandbox directory itself);
//   - nothing that existed in the root changed;
//   - every new file is the exact content of an upload whose CLOSE the server acknowledged
//     (content modelled from the WRITEs it acknowledged), with no exec/setuid bit and one link.
// Reproduce a failure with SFTP_FUZZ_SEED=<seed printed below>; scale with SFTP_FUZZ_PACKETS.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { snapshot, auditLines, type Sandbox, type Snap } from "./helpers/env.js";
import { size } from "./helpers/scale.js";
import { Rng } from "./helpers/rng.js";
import { SftpClient, hostileWorld, FX, PF, T, Reader, packet, u8, u32, u64, str, attrs, crashSigns, type Attrs, type Reply } from "./helpers/sftp-client.js";

const SEED = Number(process.env.SFTP_FUZZ_SEED ?? crypto.randomBytes(4).readUInt32BE(0));
const PACKETS = size("SFTP_FUZZ_PACKETS", 100_000, 3_000);
const PER_PROCESS = 5_000;
const WINDOW = 128; // requests in flight
const MAX_FILE = 16 * 1024 * 1024; // the sandbox's limit, so the content model stays small
const PEAK_RSS_LIMIT_MIB = 200;

// ---- what the fuzzer sends ------------------------------------------------------------------

interface Ctx {
  rng: Rng;
  sb: Sandbox;
  /** Handles the server gave out (live or not): the generator reuses them. */
  handles: Buffer[];
}

const BOUNDARY_U32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe, 255, 256, 65535, 65536];
const BOUNDARY_U64 = [0n, 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(MAX_FILE), BigInt(MAX_FILE - 1)];

function fuzzPath(c: Ctx): Buffer | string {
  const { rng, sb } = c;
  switch (rng.int(4)) {
    case 0:
      return rng.pick(["existing.gpg", "dir/inner.gpg", "dir", "empty", ".", "", "/", sb.root, `${sb.root}/existing.gpg`, `${sb.root}/dir`, "./existing.gpg", "existing.gpg/"]);
    case 1:
      return rng.pick([`f${rng.int(40)}.gpg`, `dir/f${rng.int(20)}`, `new${rng.int(4)}/f`, `d${rng.int(8)}`, `d${rng.int(8)}/f${rng.int(8)}`, `${sb.root}/g${rng.int(8)}`, `.f${rng.int(4)}.part`]);
    case 2:
      return rng.pick<Buffer | string>([
        "..",
        "../x",
        "../outside/canary.txt",
        "../outside/new",
        "/etc/passwd",
        "/proc/self/environ",
        "~",
        "~/.ssh/authorized_keys",
        "~root",
        "escape",
        "escape/new",
        "escape/canary.txt",
        "escape-file",
        `${sb.outside}/new`,
        `${sb.home}/.ssh/authorized_keys`,
        `${sb.state}/tmp/1`,
        `${sb.state}/tmp`,
        "/tmp/vb-fuzz-escape",
        "dir/../../x",
        "a\0b",
        Buffer.from([0xff, 0xfe, 0x2f, 0x80]),
        "a".repeat(300),
        "a/".repeat(150),
        "\n",
        "é.gpg",
        "-",
        "*",
      ]);
    default:
      return rng.bytes(rng.int(24));
  }
}

function fuzzHandle(c: Ctx): Buffer {
  const { rng } = c;
  if (c.handles.length && rng.chance(0.8)) return c.handles[c.handles.length - 1 - rng.int(Math.min(c.handles.length, 40))]!;
  return rng.chance(0.5) ? u32(rng.int(300)) : rng.bytes(rng.int(12));
}

function fuzzAttrs(c: Ctx): Buffer {
  const { rng } = c;
  if (rng.chance(0.1)) return rng.bytes(rng.int(40)); // not even attributes
  const a: Attrs = {};
  if (rng.chance(0.3)) a.size = rng.chance(0.5) ? rng.int(70000) : rng.pick(BOUNDARY_U64);
  if (rng.chance(0.15)) [a.uid, a.gid] = [rng.pick([0, 1000, 65534]), rng.pick([0, 1000])];
  if (rng.chance(0.4)) a.perm = rng.pick([0o644, 0o755, 0o4755, 0o7777, 0o777, 0o120777, 0, rng.u32()]);
  if (rng.chance(0.2)) [a.atime, a.mtime] = [rng.u32(), rng.u32()];
  if (rng.chance(0.05)) a.ext = [["user.x", rng.bytes(rng.int(8))]];
  return attrs(a);
}

function fuzzOffset(c: Ctx): bigint {
  const { rng } = c;
  return rng.chance(0.85) ? BigInt(rng.int(4) * 32768 + rng.int(3) * rng.int(1000)) : rng.pick(BOUNDARY_U64);
}

const PFLAGS = [PF.READ, PF.WRITE, PF.WRITE | PF.CREAT | PF.TRUNC, PF.WRITE | PF.CREAT, PF.WRITE | PF.APPEND | PF.CREAT, PF.READ | PF.WRITE, PF.CREAT, PF.TRUNC, PF.EXCL | PF.CREAT | PF.WRITE, PF.APPEND, 0];

type Gen = (c: Ctx) => Buffer[];
const path1: Gen = (c) => [str(fuzzPath(c))];
const handle1: Gen = (c) => [str(fuzzHandle(c))];

const EXT_FIELDS: Record<string, Gen> = {
  "posix-rename@openssh.com": (c) => [str(fuzzPath(c)), str(fuzzPath(c))],
  "hardlink@openssh.com": (c) => [str(fuzzPath(c)), str(fuzzPath(c))],
  "statvfs@openssh.com": path1,
  "fstatvfs@openssh.com": handle1,
  "fsync@openssh.com": handle1,
  "limits@openssh.com": () => [],
  "expand-path@openssh.com": path1,
  "home-directory": (c) => [str(c.rng.pick(["", "root", "vbtest", "x"]))],
  "users-groups-by-id@openssh.com": (c) => [str(Buffer.concat([u32(0), u32(c.rng.u32())])), str(c.rng.bytes(c.rng.int(3) * 4))],
  "copy-data": (c) => [str(fuzzHandle(c)), u64(fuzzOffset(c)), u64(fuzzOffset(c)), str(fuzzHandle(c)), u64(fuzzOffset(c))],
  "lsetstat@openssh.com": (c) => [str(fuzzPath(c)), fuzzAttrs(c)],
};

// Weighted: the write path (OPEN, WRITE, CLOSE) comes up often enough to publish files.
const REQUESTS: Array<[number, number, Gen]> = [
  [T.OPEN, 14, (c) => [str(fuzzPath(c)), u32(c.rng.chance(0.9) ? c.rng.pick(PFLAGS) : c.rng.u32()), fuzzAttrs(c)]],
  [T.WRITE, 22, (c) => [str(fuzzHandle(c)), u64(fuzzOffset(c)), str(c.rng.bytes(c.rng.chance(0.05) ? 65536 : c.rng.int(4096)))]],
  [T.CLOSE, 10, handle1],
  [T.READ, 5, (c) => [str(fuzzHandle(c)), u64(fuzzOffset(c)), u32(c.rng.chance(0.8) ? c.rng.int(70000) : c.rng.pick(BOUNDARY_U32))]],
  [T.LSTAT, 2, path1],
  [T.STAT, 3, path1],
  [T.FSTAT, 2, handle1],
  [T.SETSTAT, 4, (c) => [str(fuzzPath(c)), fuzzAttrs(c)]],
  [T.FSETSTAT, 4, (c) => [str(fuzzHandle(c)), fuzzAttrs(c)]],
  [T.OPENDIR, 3, path1],
  [T.READDIR, 3, handle1],
  [T.REMOVE, 3, path1],
  [T.MKDIR, 3, (c) => [str(fuzzPath(c)), fuzzAttrs(c)]],
  [T.RMDIR, 2, path1],
  [T.REALPATH, 2, path1],
  [T.RENAME, 4, (c) => [str(fuzzPath(c)), str(fuzzPath(c))]],
  [T.READLINK, 1, path1],
  [T.SYMLINK, 2, (c) => [str(fuzzPath(c)), str(fuzzPath(c))]],
  [T.EXTENDED, 8, (c) => {
    const name = c.rng.chance(0.9) ? c.rng.pick(Object.keys(EXT_FIELDS)) : c.rng.bytes(c.rng.int(30)).toString("latin1");
    return [str(name), ...(EXT_FIELDS[name]?.(c) ?? [c.rng.bytes(c.rng.int(30))])];
  }],
  [-1, 2, (c) => [c.rng.bytes(c.rng.int(64))]], // a type nobody defined
];
const TOTAL_WEIGHT = REQUESTS.reduce((n, [, w]) => n + w, 0);

/** Byte-level damage that keeps the packet framed (the length is recomputed afterwards). */
function mutate(rng: Rng, body: Buffer): Buffer {
  let b: Buffer = Buffer.from(body);
  for (let k = 1 + rng.int(3); k > 0; k--) {
    const at = 1 + rng.int(Math.max(1, b.length - 1));
    switch (rng.int(5)) {
      case 0:
        b.writeUInt8((b[at % b.length]! ^ (1 << rng.int(8))) & 0xff, at % b.length);
        break;
      case 1:
        b.writeUInt8(rng.u32() & 0xff, at % b.length);
        break;
      case 2:
        b = b.subarray(0, Math.max(5, at));
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(16)), b.subarray(at)]);
        break;
      default:
        if (b.length >= at + 4) b.writeUInt32BE(rng.pick(BOUNDARY_U32), at);
    }
  }
  return b;
}

/** One request: its body (type byte first) with a fresh id, mutated now and then. */
function nextBody(c: Ctx, id: number): Buffer {
  let pick = c.rng.int(TOTAL_WEIGHT);
  let entry = REQUESTS[0]!;
  for (const e of REQUESTS) if ((pick -= e[1]) < 0) {
    entry = e;
    break;
  }
  const type = entry[0] === -1 ? 21 + c.rng.int(235) : entry[0];
  let body: Buffer = Buffer.concat([u8(type), u32(id), ...entry[2](c)]);
  if (c.rng.chance(0.25)) body = mutate(c.rng, body);
  // INIT again, or too short for an id, would end the session: the batch's last packet does that.
  if (body[0] === T.INIT) body[0] = 99;
  return body;
}

/** How a batch ends: an EOF, or one of the framing attacks that must end the session cleanly. */
const ENDINGS: Array<[string, (rng: Rng) => Buffer]> = [
  ["EOF", () => Buffer.alloc(0)],
  ["length 0", () => u32(0)],
  ["length 2^31", (rng) => Buffer.concat([u32(0x80000000), rng.bytes(100)])],
  ["length over the limit", () => Buffer.concat([u32(256 * 1024 + 1), u8(T.WRITE)])],
  ["truncated packet", (rng) => Buffer.concat([u32(1000), u8(T.WRITE), rng.bytes(20)])],
  ["too short for an id", () => Buffer.concat([u32(2), u8(T.STAT), u8(0)])],
  ["INIT again", () => packet(T.INIT, u32(3))],
  ["garbage", (rng) => rng.bytes(64)],
];

// ---- what the server acknowledged: the model new files are checked against ------------------

const PAGE = 65536;

class Content {
  pages = new Map<number, Buffer>();
  size = 0;
  constructor(readonly append: boolean) {}
  write(offset: number, data: Buffer): void {
    let pos = this.append ? this.size : offset;
    for (let i = 0; i < data.length; ) {
      const p = Math.floor(pos / PAGE);
      const page = this.pages.get(p) ?? Buffer.alloc(PAGE);
      this.pages.set(p, page);
      const n = data.copy(page, pos % PAGE, i, i + Math.min(data.length - i, PAGE - (pos % PAGE)));
      i += n;
      pos += n;
    }
    this.size = Math.max(this.size, (this.append ? this.size : offset) + data.length);
  }
  digest(): string {
    const h = crypto.createHash("sha256");
    const zero = Buffer.alloc(PAGE);
    for (let p = 0; p * PAGE < this.size; p++) h.update((this.pages.get(p) ?? zero).subarray(0, Math.min(PAGE, this.size - p * PAGE)));
    return `${this.size}:${h.digest("hex")}`;
  }
}

const WRITE_FLAGS = PF.WRITE | PF.APPEND | PF.CREAT | PF.TRUNC | PF.EXCL;

interface Model {
  uploads: Map<string, Content>; // handle (hex) -> what was acknowledged
  published: Set<string>; // size:sha256 of every upload whose CLOSE was acknowledged
  anomalies: string[];
  stats: Record<string, number>;
}

/** Match reply k to request k (replies come in order) and record what the server acknowledged. */
function learn(m: Model, req: Buffer, r: Reply, ctx: Ctx): void {
  const bump = (k: string) => (m.stats[k] = (m.stats[k] ?? 0) + 1);
  const sentId = req.readUInt32BE(1);
  if (r.id !== sentId) m.anomalies.push(`reply id ${r.id} to a request with id ${sentId} (type ${req[0]}): replies out of order or missing`);
  bump(r.status ? `status ${r.status.code}` : `reply ${r.type}`);
  const rd = new Reader(req);
  rd.pos = 5;
  try {
    if (r.handle) {
      ctx.handles.push(r.handle);
      if (ctx.handles.length > 200) ctx.handles.splice(0, 100);
      if (req[0] === T.OPEN) {
        rd.bytes();
        const pflags = rd.u32();
        if (pflags & WRITE_FLAGS) {
          m.uploads.set(r.handle.toString("hex"), new Content((pflags & PF.APPEND) !== 0));
          bump("upload handles");
        }
      }
      return;
    }
    if (r.status?.code !== FX.OK) return;
    if (req[0] === T.WRITE) {
      const h = rd.bytes().toString("hex");
      const offset = Number(rd.u64());
      const data = rd.bytes();
      const up = m.uploads.get(h);
      if (!up) m.anomalies.push(`WRITE acknowledged on handle ${h}, which is no upload`);
      else up.write(offset, data);
    } else if (req[0] === T.CLOSE) {
      const h = rd.bytes().toString("hex");
      const up = m.uploads.get(h);
      if (up) {
        m.published.add(up.digest());
        m.uploads.delete(h);
        bump("uploads closed");
      }
    }
  } catch (e) {
    m.anomalies.push(`the server acknowledged request type ${req[0]} that does not parse: ${(e as Error).message}`);
  }
}

// ---- one server process -------------------------------------------------------------------

async function batch(t: Test, sb: Sandbox, rng: Rng, count: number, m: Model): Promise<{ sent: number; ending: string; peakMiB: number }> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  const ctx: Ctx = { rng, sb, handles: [] };
  const pending: Buffer[] = [];
  let answered = 0;
  let wake: (() => void) | undefined;
  c.listen((r) => {
    const req = pending.shift();
    answered++;
    if (!req) m.anomalies.push(`a reply (type ${r.type}, id ${r.id}) to no request`);
    else learn(m, req, r, ctx);
    wake?.();
  });
  const exitedEarly = c.exited.then(() => wake?.());
  let sent = 0;
  for (; sent < count && c.alive; sent++) {
    while (pending.length >= WINDOW && c.alive) await new Promise<void>((resolve) => (wake = resolve));
    if (!c.alive) break;
    const body = nextBody(ctx, c.allocId());
    pending.push(body);
    c.sendRaw(Buffer.concat([u32(body.length), body]));
    if (sent % 256 === 0) await c.drain();
  }
  while (pending.length && c.alive) await new Promise<void>((resolve) => (wake = resolve));
  void exitedEarly;
  if (!c.alive) m.anomalies.push(`the server hung up in the middle of a batch after ${sent} packets (${answered} answered): ${c.stderr.slice(-300)}`);
  const peakMiB = (c.peakRssKiB() ?? 0) / 1024;
  const [ending, make] = rng.pick(ENDINGS);
  c.sendRaw(make(rng));
  c.child.stdin!.end();
  const timer = setTimeout(() => c.kill("SIGKILL"), 30_000);
  const exit = await c.exited;
  clearTimeout(timer);
  const crash = crashSigns(exit);
  if (crash) m.anomalies.push(`crash after "${ending}": ${crash}\n${exit.stderr.slice(-2000)}`);
  if (exit.signal) m.anomalies.push(`the server did not exit by itself after "${ending}" (signal ${exit.signal})`);
  if (c.protocolError) m.anomalies.push(`malformed reply: ${c.protocolError}`);
  return { sent, ending, peakMiB };
}

// ---- the invariants -------------------------------------------------------------------------

function diff(before: Snap, after: Snap): string[] {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...keys].filter((k) => before[k] !== after[k]).map((k) => `${k}: ${before[k] ?? "(absent)"} -> ${after[k] ?? "(absent)"}`);
}

function checkTree(sb: Sandbox, initial: { root: Snap; outside: Snap; home: Snap; dir: string[] }, m: Model): string[] {
  const bad: string[] = [];
  bad.push(...diff(initial.outside, snapshot(sb.outside)).map((d) => `outside changed: ${d}`));
  bad.push(...diff(initial.home, snapshot(sb.home)).map((d) => `home changed: ${d}`));
  const dir = fs.readdirSync(sb.dir).sort();
  if (dir.join("/") !== initial.dir.join("/")) bad.push(`the sandbox directory changed: ${initial.dir.join(",")} -> ${dir.join(",")}`);
  if (fs.existsSync("/tmp/vb-fuzz-escape")) bad.push("/tmp/vb-fuzz-escape was created");
  const root = snapshot(sb.root);
  // A directory's link count grows with new subdirectories: that is adding, not changing.
  const stable = (v: string | undefined) => (v?.startsWith("4") ? v.split(" ").slice(0, 2).join(" ") : v);
  for (const [rel, v] of Object.entries(initial.root))
    if (stable(root[rel]) !== stable(v)) bad.push(`existing entry ${rel} changed: ${v} -> ${root[rel] ?? "(gone)"}`);
  for (const rel of Object.keys(root)) {
    if (rel in initial.root) continue;
    const p = path.join(sb.root, rel);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      if (st.mode & 0o7000) bad.push(`new directory ${rel} has mode ${st.mode.toString(8)}`);
    } else if (st.isFile()) {
      if (st.mode & 0o7111) bad.push(`new file ${rel} has mode ${st.mode.toString(8)}`);
      if (st.nlink !== 1) bad.push(`new file ${rel} has ${st.nlink} links`);
      const id = `${st.size}:${crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex")}`;
      if (!m.published.has(id)) bad.push(`new file ${rel} (${id.slice(0, 24)}…) matches no acknowledged upload`);
    } else bad.push(`new entry ${rel} is neither a file nor a directory (mode ${st.mode.toString(8)})`);
  }
  return bad;
}

t.test(`SFTP fuzz: ${PACKETS} packets, seed ${SEED}`, async (t) => {
  t.comment(`seed ${SEED}: reproduce with SFTP_FUZZ_SEED=${SEED} npx tap test/sftp-fuzz.test.ts`);
  const sb = hostileWorld(t, {
    files: { ".f0.part": "looks like a partial upload\n" },
    config: { limits: { maxFileBytes: MAX_FILE, maxOpenHandles: 64 } },
  });
  const initial = { root: snapshot(sb.root), outside: snapshot(sb.outside), home: snapshot(sb.home), dir: fs.readdirSync(sb.dir).sort() };
  const m: Model = { uploads: new Map(), published: new Set(), anomalies: [], stats: {} };
  const master = new Rng(SEED);
  let total = 0;
  let processes = 0;
  let peak = 0;
  const endings: Record<string, number> = {};
  while (total < PACKETS) {
    const batchSeed = master.u32();
    const r = await batch(t, sb, new Rng(batchSeed), Math.min(PER_PROCESS, PACKETS - total), m);
    processes++;
    total += r.sent + 1;
    peak = Math.max(peak, r.peakMiB);
    endings[r.ending] = (endings[r.ending] ?? 0) + 1;
    m.uploads.clear(); // the process is gone: its open uploads were abandoned
    const bad = checkTree(sb, initial, m);
    if (m.anomalies.length || bad.length) {
      t.fail(`process ${processes} (batch seed ${batchSeed}, ending "${r.ending}")`, { diagnostic: true, anomalies: m.anomalies.slice(0, 20), tree: bad.slice(0, 20) });
      break;
    }
  }
  const lines = auditLines(sb);
  const ends = lines.filter((l) => l.event === "session-end").length;
  const ioErrors = lines.filter((l) => l.code === "IO").map((l) => String(l.reason));
  const newFiles = Object.keys(snapshot(sb.root)).filter((k) => !(k in initial.root)).length;
  t.comment(`${total} packets in ${processes} processes; peak server RSS ${peak.toFixed(1)} MiB; ${newFiles} new entries in the root; ${m.published.size} distinct uploads acknowledged`);
  t.comment(`replies: ${JSON.stringify(m.stats)}; endings: ${JSON.stringify(endings)}`);
  t.ok(total >= PACKETS, `sent ${total} packets (at least ${PACKETS})`);
  t.same(m.anomalies, [], "no crash, no protocol anomaly");
  t.equal(ends, processes, "every process closed its session (a session-end audit line each)");
  t.same(ioErrors.slice(0, 10), [], "no internal (IO) error");
  t.ok(peak < PEAK_RSS_LIMIT_MIB, `peak RSS ${peak.toFixed(1)} MiB < ${PEAK_RSS_LIMIT_MIB} MiB`);
  t.ok((m.stats["uploads closed"] ?? 0) > 0, "the fuzz reached the upload path (some uploads were published)");
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "no temporary file left behind");
});
