// `npm run bench:floor`: where the time of many small files goes. OpenSSH's `sftp -b 'put -r'` of
// VB_BENCH_SMALL files (2,000) of VB_BENCH_SMALL_BYTES (4096), then `get -r` of them, in alternating
// rounds (VB_BENCH_ROUNDS, 5), against OpenSSH's sftp-server, our server (the real launcher), and
// the floor server (bench/floor-server.ts) in its three modes: bare node, node with an fsync per
// file, and node making exactly the file system operations of our design (downloads: bare only, the
// modes differ only in uploads). The difference between the floor's `design` and ours is what our
// implementation adds (the confinement walk, the checks, the audit line's making); between `bare`
// and sftp-server, what node itself costs. Then VB_BENCH_SESSIONS (20) sessions at once, each
// uploading VB_BENCH_SESSION_MIB (64 MiB), sftp-server's and ours, beside as many `node -e 0` at
// once: a node per session costs at least its start-up, whatever it does after. A measurement: it
// asserts only that every run stored, and fetched, every file.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { num, median, writeExecutable } from "./settings.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LAUNCHER = path.resolve(HERE, "../../bin/validate-backup");
const FLOOR = path.join(HERE, "floor-server.js");
const SMALL = num("VB_BENCH_SMALL", 2000);
const SMALL_BYTES = num("VB_BENCH_SMALL_BYTES", 4096);
const ROUNDS = num("VB_BENCH_ROUNDS", 5);
const SESSIONS = num("VB_BENCH_SESSIONS", 20);
const SESSION_MIB = num("VB_BENCH_SESSION_MIB", 64);
const NODE_STARTS = "node-starts";

interface Server {
  name: string;
  root: string;
  wrapper: string;
  /** Timed for downloads too. */
  get?: boolean;
  /** Timed for many sessions at once too. */
  many?: boolean;
}

function servers(work: string): Server[] {
  const made = (name: string, script: (root: string) => string): Server => {
    const root = path.join(work, name, "root");
    fs.mkdirSync(root, { recursive: true });
    const wrapper = path.join(work, name, "server.sh");
    writeExecutable(wrapper, `#!/bin/sh\n${script(root)}\n`);
    return { name, root, wrapper };
  };
  const config = path.join(work, "ours", "config.json");
  const ours = made("ours", (root) => {
    fs.mkdirSync(`${root}.state`);
    fs.writeFileSync(config, JSON.stringify({ label: "floor", root, audit: { file: path.join(work, "ours", "audit.log") }, limits: { sessions: Math.max(SESSIONS, 4) } }));
    return `SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server SSH_CLIENT='127.0.0.1 1 22' exec ${LAUNCHER} --config ${config}`;
  });
  const floor = (mode: string) =>
    made(`node-${mode}`, (root) => `cd ${root} || exit 1\nexec /usr/bin/env -i PATH=/usr/bin:/bin /usr/bin/node ${FLOOR} ${mode} ${root}.state`);
  const get = (s: Server, many = false): Server => ({ ...s, get: true, many });
  return [get(made("openssh", (root) => `cd ${root} || exit 1\nexec /usr/lib/openssh/sftp-server`), true), get(floor("bare")), floor("fsync"), floor("design"), get(ours, true)];
}

/** One `sftp -b` run, timed after a sync(1); it must leave SMALL files in `dir`. */
function timed(s: Server, batch: string, dir: string, round: number, what: string): number {
  spawnSync("/usr/bin/sync", [], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/sftp", ["-q", "-b", batch, "-D", s.wrapper], { env: { PATH: "/usr/bin:/bin" }, encoding: "utf8", maxBuffer: 64 << 20 });
  const took = Number(process.hrtime.bigint() - t0) / 1e6;
  const done = fs.existsSync(dir) ? fs.readdirSync(dir).length : 0;
  if (r.status !== 0 || done !== SMALL) throw new Error(`${s.name} ${what}: exit ${r.status}, ${done} of ${SMALL} files: ${(r.stderr ?? "").slice(-500)}`);
  process.stdout.write(`  round ${round} ${what} ${s.name.padEnd(12)} ${took.toFixed(0)} ms\n`);
  return took;
}

/** SESSIONS processes at once, each `argv`; resolves with their exit codes. */
function atOnce(argv: string[][]): Promise<Array<number | null>> {
  return Promise.all(
    argv.map(
      ([cmd, ...args]) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(cmd!, args, { env: { PATH: "/usr/bin:/bin" }, stdio: "ignore" });
          child.on("error", () => resolve(null));
          child.on("close", resolve);
        }),
    ),
  );
}

/** SESSIONS uploads of the same file at once, each its own sftp and server; all must store it whole. */
async function concurrent(s: Server, work: string, round: number): Promise<number> {
  const src = path.join(work, "session.bin");
  const size = fs.statSync(src).size;
  const batches = Array.from({ length: SESSIONS }, (_, i) => {
    const b = path.join(work, `batch-session-${i}`);
    fs.writeFileSync(b, `put ${src} session-${i}.bin\n`);
    return b;
  });
  spawnSync("/usr/bin/sync", [], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  const codes = await atOnce(batches.map((b) => ["/usr/bin/sftp", "-q", "-b", b, "-D", s.wrapper]));
  const took = Number(process.hrtime.bigint() - t0) / 1e6;
  for (let i = 0; i < SESSIONS; i++) {
    const f = path.join(s.root, `session-${i}.bin`);
    if (codes[i] !== 0 || !fs.existsSync(f) || fs.statSync(f).size !== size) throw new Error(`${s.name}: session ${i} failed (exit ${codes[i]})`);
    fs.rmSync(f);
  }
  process.stdout.write(`  round ${round} ${SESSIONS} sessions ${s.name.padEnd(12)} ${took.toFixed(0)} ms\n`);
  return took;
}

function table(what: string, ms: Record<string, number[]>, names: string[], files = SMALL): void {
  process.stdout.write(`\n${files === SMALL ? `${SMALL} x ${SMALL_BYTES} B ` : ""}${what}, median of ${ROUNDS} rounds:\n`);
  process.stdout.write(`server          ms   files/s  OpenSSH's time / this one's (median of the rounds' own ratios)\n`);
  for (const name of names.filter((n) => ms[n])) {
    const times = ms[name]!;
    const mine = median(times);
    const ratios = times.map((t, i) => ms.openssh![i]! / t);
    process.stdout.write(`${name.padEnd(12)}${mine.toFixed(0).padStart(6)}${((files / mine) * 1000).toFixed(0).padStart(10)}  ${median(ratios).toFixed(2)}x\n`);
  }
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync("/var/tmp/vb-floor-");
  try {
    const src = path.join(work, "small");
    fs.mkdirSync(src);
    for (let i = 0; i < SMALL; i++) fs.writeFileSync(path.join(src, `f${String(i).padStart(6, "0")}.bin`), crypto.randomBytes(SMALL_BYTES));
    const batch = path.join(work, "batch");
    fs.writeFileSync(batch, `lcd ${work}\nput -r small\n`);
    const dl = path.join(work, "dl");
    const getBatch = path.join(work, "batch-get");
    fs.writeFileSync(getBatch, `get -r small ${dl}\n`);
    const all = servers(work);
    const ms: Record<string, number[]> = {};
    const getMs: Record<string, number[]> = {};
    const sessionMs: Record<string, number[]> = {};
    const chunk = Buffer.allocUnsafe(1 << 20);
    const sfd = fs.openSync(path.join(work, "session.bin"), "w");
    for (let i = 0; i < SESSION_MIB; i++) fs.writeSync(sfd, crypto.randomFillSync(chunk));
    fs.closeSync(sfd);
    for (let round = 1; round <= ROUNDS; round++) {
      // A different server first each round: none always meets the previous round's deletions.
      const order = all.map((_, i) => all[(i + round) % all.length]!);
      for (const s of order) {
        fs.rmSync(path.join(s.root, "small"), { recursive: true, force: true });
        (ms[s.name] ??= []).push(timed(s, batch, path.join(s.root, "small"), round, "put"));
        if (!s.get) continue;
        fs.rmSync(dl, { recursive: true, force: true });
        (getMs[s.name] ??= []).push(timed(s, getBatch, dl, round, "get"));
        if (s.many) (sessionMs[s.name] ??= []).push(await concurrent(s, work, round));
      }
      const t0 = process.hrtime.bigint();
      await atOnce(Array.from({ length: SESSIONS }, () => ["/usr/bin/node", "-e", "0"]));
      (sessionMs[NODE_STARTS] ??= []).push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const names = all.map((s) => s.name);
    table("uploaded", ms, names);
    table("downloaded", getMs, names);
    table(`uploaded as ${SESSIONS} sessions of ${SESSION_MIB} MiB at once (files/s: sessions/s)`, sessionMs, [...names, NODE_STARTS], SESSIONS);
    const bound = median(sessionMs.openssh!.map((t, i) => t / (t + sessionMs[NODE_STARTS]![i]!)));
    process.stdout.write(`(${NODE_STARTS}: ${SESSIONS} x \`node -e 0\` at once; OpenSSH's time / (its time + theirs), about the most a node per session could reach, were its transfer as cheap as sftp-server's: ${bound.toFixed(2)}x)\n`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
