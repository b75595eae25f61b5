// `npm run bench`: OpenSSH's own `sftp -b` client against our server and against OpenSSH's
// sftp-server, in the same run, on the same files: one big file (1 GiB by default) and many small
// ones (10,000 by default), each uploaded and then downloaded. Prints MB/s, the ratio ours/OpenSSH
// and each server's peak RSS (GNU time). A measurement, not a test: it asserts nothing about speed,
// only that every transfer succeeded and came back byte-identical.
//
// Settings (environment): VB_BENCH_BIG_MIB (1024), VB_BENCH_SMALL (10000), VB_BENCH_SMALL_BYTES
// (4096), VB_BENCH_ROUNDS (1), VB_BENCH_DIR (a new directory under /var/tmp, removed at the end).
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { num } from "./settings.js";

const TOP = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LAUNCHER = path.join(TOP, "bin/validate-backup");
const OPENSSH_SERVER = "/usr/lib/openssh/sftp-server";
const SFTP = "/usr/bin/sftp";
const GNU_TIME = "/usr/bin/time";
const SYNC = "/usr/bin/sync";
const MB = 1e6;

const BIG_MIB = num("VB_BENCH_BIG_MIB", 1024);
const SMALL = num("VB_BENCH_SMALL", 10_000);
const SMALL_BYTES = num("VB_BENCH_SMALL_BYTES", 4096);
const ROUNDS = num("VB_BENCH_ROUNDS", 1);

interface Server {
  name: string;
  /** The directory the client's relative paths land in. */
  root: string;
  /** The program `sftp -D` runs: a wrapper that records peak RSS into $VB_BENCH_RSS. */
  wrapper: string;
}

interface Op {
  name: string;
  bytes: number;
  files: number;
  batch: (work: string, dl: string) => string;
}

function need(file: string, hint: string): void {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new Error(`${file} is needed (${hint})`);
  }
}

function writeExecutable(file: string, text: string): void {
  fs.writeFileSync(file, text, { mode: 0o755 });
}

/** Random content, written in 1 MiB chunks so memory stays flat. */
function makeFiles(src: string): void {
  const chunk = Buffer.allocUnsafe(1 << 20);
  const fd = fs.openSync(path.join(src, "big.bin"), "w");
  for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, crypto.randomFillSync(chunk));
  fs.closeSync(fd);
  const small = path.join(src, "small");
  fs.mkdirSync(small);
  for (let i = 0; i < SMALL; i++) fs.writeFileSync(path.join(small, `f${String(i).padStart(6, "0")}.bin`), crypto.randomBytes(SMALL_BYTES));
}

function hashFile(file: string): string {
  const h = crypto.createHash("sha256");
  const buf = Buffer.allocUnsafe(1 << 20);
  const fd = fs.openSync(file, "r");
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

function sameTree(a: string, b: string): boolean {
  const names = fs.readdirSync(a).sort();
  if (names.join("/") !== fs.readdirSync(b).sort().join("/")) return false;
  return names.every((n) => fs.readFileSync(path.join(a, n)).equals(fs.readFileSync(path.join(b, n))));
}

/** Our server: the real launcher with SSH_ORIGINAL_COMMAND set, as sshd would run it. */
function ours(work: string): Server {
  const base = path.join(work, "ours");
  const root = path.join(base, "root");
  fs.mkdirSync(root, { recursive: true });
  fs.mkdirSync(`${root}.state`);
  const config = path.join(base, "config.json");
  fs.writeFileSync(config, JSON.stringify({ label: "bench", root, audit: { file: path.join(base, "audit.log") } }, null, 2));
  const wrapper = path.join(base, "server.sh");
  writeExecutable(
    wrapper,
    `#!/bin/sh\nSSH_ORIGINAL_COMMAND=${OPENSSH_SERVER} SSH_CLIENT='127.0.0.1 1 22' exec ${GNU_TIME} -f %M -o "$VB_BENCH_RSS" ${LAUNCHER} --config ${config}\n`,
  );
  return { name: "ours", root, wrapper };
}

/** OpenSSH's sftp-server, started in its own root so relative paths land in the same place. */
function openssh(work: string): Server {
  const root = path.join(work, "openssh", "root");
  fs.mkdirSync(root, { recursive: true });
  const wrapper = path.join(work, "openssh", "server.sh");
  writeExecutable(wrapper, `#!/bin/sh\ncd ${root} || exit 1\nexec ${GNU_TIME} -f %M -o "$VB_BENCH_RSS" ${OPENSSH_SERVER}\n`);
  return { name: "openssh", root, wrapper };
}

interface Result {
  seconds: number;
  rssKiB: number;
}

function transfer(s: Server, op: Op, work: string, dl: string, round: number): Result {
  const batch = path.join(work, `batch-${s.name}-${op.name.replace(/\W+/g, "_")}-${round}`);
  const rss = `${batch}.rss`;
  fs.writeFileSync(batch, op.batch(work, dl));
  // Start each transfer with no dirty pages: otherwise the kernel writes back the previous
  // transfer's data (the other server's, as often as not) during this one.
  spawnSync(SYNC, [], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  const r = spawnSync(SFTP, ["-q", "-b", batch, "-D", s.wrapper], { env: { PATH: "/usr/bin:/bin", VB_BENCH_RSS: rss }, encoding: "utf8", maxBuffer: 64 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${s.name}: ${op.name} failed (exit ${r.status}):\n${(r.stderr + r.stdout).slice(-2000)}`);
  const rssKiB = Number(fs.readFileSync(rss, "utf8").trim().split("\n").pop());
  return { seconds, rssKiB };
}

const OPS: Op[] = [
  { name: `upload ${BIG_MIB} MiB`, bytes: BIG_MIB << 20, files: 1, batch: (w) => `put ${w}/src/big.bin big.bin\n` },
  { name: `download ${BIG_MIB} MiB`, bytes: BIG_MIB << 20, files: 1, batch: (_w, dl) => `get big.bin ${dl}/big.bin\n` },
  { name: `upload ${SMALL} x ${SMALL_BYTES} B`, bytes: SMALL * SMALL_BYTES, files: SMALL, batch: (w) => `put -r ${w}/src/small small\n` },
  { name: `download ${SMALL} x ${SMALL_BYTES} B`, bytes: SMALL * SMALL_BYTES, files: SMALL, batch: (_w, dl) => `get -r small ${dl}/small\n` },
];

function verify(s: Server, work: string, dl: string, bigHash: string): void {
  const problems: string[] = [];
  if (hashFile(path.join(s.root, "big.bin")) !== bigHash) problems.push("uploaded big file differs");
  if (hashFile(path.join(dl, "big.bin")) !== bigHash) problems.push("downloaded big file differs");
  if (!sameTree(path.join(work, "src/small"), path.join(s.root, "small"))) problems.push("uploaded small files differ");
  if (!sameTree(path.join(work, "src/small"), path.join(dl, "small"))) problems.push("downloaded small files differ");
  if (problems.length) throw new Error(`${s.name}: ${problems.join("; ")}`);
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

function main(): number {
  need(SFTP, "apt-get install openssh-client");
  need(OPENSSH_SERVER, "apt-get install openssh-sftp-server");
  need(GNU_TIME, "apt-get install time: it measures each server's peak RSS");
  if (!fs.existsSync(path.join(TOP, "dist/app/cli.js"))) throw new Error("dist/app/cli.js is missing: run npm run build");
  const work = process.env.VB_BENCH_DIR ?? fs.mkdtempSync("/var/tmp/vb-bench-");
  fs.mkdirSync(path.join(work, "src"), { recursive: true });
  const cleanup = !process.env.VB_BENCH_DIR;
  try {
    process.stdout.write(`generating ${BIG_MIB} MiB + ${SMALL} x ${SMALL_BYTES} B in ${work} ...\n`);
    makeFiles(path.join(work, "src"));
    const bigHash = hashFile(path.join(work, "src/big.bin"));
    const rows: Array<{ round: number; op: Op; ours: Result; openssh: Result }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which server goes first, so neither always gets the warmer page cache.
      const servers = round % 2 ? [ours, openssh] : [openssh, ours];
      const results: Record<string, Result[]> = {};
      for (const make of servers) {
        const base = path.join(work, make === ours ? "ours" : "openssh");
        fs.rmSync(base, { recursive: true, force: true });
        const s = make(work);
        const dl = path.join(work, `dl-${s.name}`);
        fs.rmSync(dl, { recursive: true, force: true });
        fs.mkdirSync(dl);
        results[s.name] = OPS.map((op) => {
          const r = transfer(s, op, work, dl, round);
          process.stdout.write(`  round ${round} ${pad(s.name, 8)} ${pad(op.name, 28)} ${r.seconds.toFixed(2)} s\n`);
          return r;
        });
        verify(s, work, dl, bigHash);
        fs.rmSync(dl, { recursive: true, force: true });
        fs.rmSync(path.join(s.root, "big.bin"));
      }
      OPS.forEach((op, i) => rows.push({ round, op, ours: results.ours![i]!, openssh: results.openssh![i]! }));
    }
    const rate = (op: Op, r: Result) => op.bytes / MB / r.seconds;
    const lines = [
      "",
      `validate-backup bench: node ${process.version}, ${new Date().toISOString()}, MB = 10^6 bytes, RSS = peak resident set (GNU time)`,
      `${pad("round", 6)}${pad("transfer", 30)}${pad("ours MB/s", 11, true)}${pad("OpenSSH MB/s", 14, true)}${pad("ratio", 8, true)}${pad("files/s ours", 14, true)}${pad("OpenSSH", 9, true)}${pad("RSS ours", 10, true)}${pad("OpenSSH", 9, true)}`,
      ...rows.map(({ round, op, ours: o, openssh: s }) =>
        [
          pad(String(round), 6),
          pad(op.name, 30),
          pad(rate(op, o).toFixed(1), 11, true),
          pad(rate(op, s).toFixed(1), 14, true),
          pad(`${(rate(op, o) / rate(op, s)).toFixed(2)}x`, 8, true),
          pad(op.files > 1 ? (op.files / o.seconds).toFixed(0) : "", 14, true),
          pad(op.files > 1 ? (op.files / s.seconds).toFixed(0) : "", 9, true),
          pad(`${(o.rssKiB / 1024).toFixed(1)}M`, 10, true),
          pad(`${(s.rssKiB / 1024).toFixed(1)}M`, 9, true),
        ].join(""),
      ),
      "",
      `peak RSS of our server over the run: ${(Math.max(...rows.map((r) => r.ours.rssKiB)) / 1024).toFixed(1)} MiB (goal: under 80 MiB)`,
    ];
    process.stdout.write(lines.join("\n") + "\n");
    return 0;
  } finally {
    if (cleanup) fs.rmSync(work, { recursive: true, force: true });
  }
}

try {
  process.exitCode = main();
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  process.exitCode = 1;
}
