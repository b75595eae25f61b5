// `npm run bench`: OpenSSH's own `sftp -b` client against our server and against OpenSSH's
// sftp-server, in the same run, on the same files: one big file (1 GiB by default) and many small
// ones (10,000 by default), each uploaded and then downloaded; the big one uploaded again by a client
// that keeps 64 WRITEs of 255 KiB in flight (`sftp -B 261120 -R 64`); 20 sessions uploading 64 MiB
// each at once; and session start-up (a refused command, an `ls` session). Prints MB/s, the ratio
// ours/OpenSSH (for uploads also counting the sync(1) after each, until the bytes are on disk) and
// each server's peak RSS (GNU time), per round and the median of the rounds (for a ratio, the
// median of the rounds' own ratios, each taken within one round). A measurement, not a test: it
// asserts nothing about speed, only that every transfer succeeded and came back byte-identical.
//
// Settings (environment): VB_BENCH_BIG_MIB (1024), VB_BENCH_SMALL (10000), VB_BENCH_SMALL_BYTES
// (4096), VB_BENCH_ROUNDS (3), VB_BENCH_SESSIONS (20), VB_BENCH_SESSION_MIB (64), VB_BENCH_STARTS
// (20 starts of each kind per round), VB_BENCH_DIR (a new directory under /var/tmp, removed at the end).
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { num, median, writeExecutable } from "./settings.js";

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
const ROUNDS = num("VB_BENCH_ROUNDS", 3);
const SESSIONS = num("VB_BENCH_SESSIONS", 20);
const SESSION_MIB = num("VB_BENCH_SESSION_MIB", 64);
const STARTS = num("VB_BENCH_STARTS", 20);
/** Set in the environment of this machine kind's shells: a baseline measured from one includes it. */
const CERTS = process.env.NODE_EXTRA_CA_CERTS;

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
  /** More sftp options (buffer size, requests in flight). */
  args?: string[];
}

function need(file: string, hint: string): void {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new Error(`${file} is needed (${hint})`);
  }
}

/** Random content, written in 1 MiB chunks so memory stays flat. */
function randomFile(file: string, mib: number): void {
  const chunk = Buffer.allocUnsafe(1 << 20);
  const fd = fs.openSync(file, "w");
  for (let i = 0; i < mib; i++) fs.writeSync(fd, crypto.randomFillSync(chunk));
  fs.closeSync(fd);
}

function makeFiles(src: string): void {
  randomFile(path.join(src, "big.bin"), BIG_MIB);
  randomFile(path.join(src, "session.bin"), SESSION_MIB);
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
  // As many concurrent sessions as the bench starts (the default allows 4 per key).
  const limits = { sessions: Math.max(SESSIONS, 4) };
  fs.writeFileSync(config, JSON.stringify({ label: "bench", root, audit: { file: path.join(base, "audit.log") }, limits }, null, 2));
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
  /** A sync(1) right after the transfer: how long its bytes took to reach the disk after it ended. */
  syncSeconds: number;
}

/** sync(1), timed: what a server left unwritten (ours fsyncs each file before CLOSE; sftp-server never). */
function timedSync(): number {
  const t0 = process.hrtime.bigint();
  spawnSync(SYNC, [], { stdio: "ignore" });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function transfer(s: Server, op: Op, work: string, dl: string, round: number): Result {
  const batch = path.join(work, `batch-${s.name}-${op.name.replace(/\W+/g, "_")}-${round}`);
  const rss = `${batch}.rss`;
  fs.writeFileSync(batch, op.batch(work, dl));
  // Start each transfer with no dirty pages: otherwise the kernel writes back the previous
  // transfer's data (the other server's, as often as not) during this one.
  spawnSync(SYNC, [], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  const r = spawnSync(SFTP, ["-q", ...(op.args ?? []), "-b", batch, "-D", s.wrapper], { env: { PATH: "/usr/bin:/bin", VB_BENCH_RSS: rss }, encoding: "utf8", maxBuffer: 64 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${s.name}: ${op.name} failed (exit ${r.status}):\n${(r.stderr + r.stdout).slice(-2000)}`);
  const rssKiB = Number(fs.readFileSync(rss, "utf8").trim().split("\n").pop());
  return { seconds, rssKiB, syncSeconds: timedSync() };
}

const OPS: Op[] = [
  { name: `upload ${BIG_MIB} MiB`, bytes: BIG_MIB << 20, files: 1, batch: (w) => `put ${w}/src/big.bin big.bin\n` },
  { name: `download ${BIG_MIB} MiB`, bytes: BIG_MIB << 20, files: 1, batch: (_w, dl) => `get big.bin ${dl}/big.bin\n` },
  { name: `upload ${SMALL} x ${SMALL_BYTES} B`, bytes: SMALL * SMALL_BYTES, files: SMALL, batch: (w) => `put -r ${w}/src/small small\n` },
  { name: `download ${SMALL} x ${SMALL_BYTES} B`, bytes: SMALL * SMALL_BYTES, files: SMALL, batch: (_w, dl) => `get -r small ${dl}/small\n` },
  // -B 262144 itself is refused by OpenSSH's sftp (9.x) before it sends anything ("Outbound message
  // too long 262169": the WRITE's header takes it past its own 256 KiB packet limit), against either
  // server; 255 KiB is the most it sends, and the most both servers accept in one WRITE.
  { name: `upload ${BIG_MIB} MiB -B 255K -R 64`, bytes: BIG_MIB << 20, files: 1, batch: (w) => `put ${w}/src/big.bin big-r64.bin\n`, args: ["-B", "261120", "-R", "64"] },
];

/** SESSIONS uploads of SESSION_MIB at once, each its own sftp and server process. */
async function concurrent(s: Server, work: string, round: number): Promise<Result> {
  const batch = path.join(work, `batch-${s.name}-concurrent-${round}`);
  spawnSync(SYNC, [], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  const runs = Array.from({ length: SESSIONS }, (_, i) => {
    const file = `${batch}-${i}`;
    fs.writeFileSync(file, `put ${work}/src/session.bin session-${i}.bin\n`);
    return new Promise<number | string>((resolve) => {
      const child = spawn(SFTP, ["-q", "-b", file, "-D", s.wrapper], { env: { PATH: "/usr/bin:/bin", VB_BENCH_RSS: `${file}.rss` }, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", (e) => resolve(`${s.name}: session ${i} could not start: ${e.message}`));
      child.on("close", (code) => {
        if (code !== 0) return resolve(`${s.name}: session ${i} failed (exit ${code}): ${err.slice(-500)}`);
        resolve(Number(fs.readFileSync(`${file}.rss`, "utf8").trim().split("\n").pop()));
      });
    });
  });
  // Every session has ended before anything is judged (or the work directory removed).
  const ended = await Promise.all(runs);
  const failed = ended.filter((r): r is string => typeof r === "string");
  if (failed.length) throw new Error(failed.join("\n"));
  const rss = ended as number[];
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const syncSeconds = timedSync();
  const want = hashFile(path.join(work, "src/session.bin"));
  for (let i = 0; i < SESSIONS; i++) {
    const f = path.join(s.root, `session-${i}.bin`);
    if (hashFile(f) !== want) throw new Error(`${s.name}: concurrent session ${i} stored different bytes`);
    fs.rmSync(f);
  }
  return { seconds, rssKiB: Math.max(...rss), syncSeconds };
}

/** Median wall time of STARTS runs of `argv` (stdin from /dev/null, or `input`); a run that does not end as `expect` says is no figure. */
function startups(argv: string[], env: NodeJS.ProcessEnv, expect = 0, input?: string): number {
  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0]!, argv.slice(1), { env, input: input ?? "", stdio: ["pipe", "ignore", "pipe"] });
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== expect) throw new Error(`start-up run ${argv.join(" ")}: exit ${r.status ?? r.signal}, expected ${expect}: ${String(r.stderr ?? r.error).slice(0, 300)}`);
  }
  return median(times);
}

interface Starts {
  refused: number;
  opensshBare: number;
  node: number;
  /** `node -e 0` with the caller's NODE_EXTRA_CA_CERTS (a shell's node loads those certificates; ours never does). */
  nodeCerts: number | undefined;
  lsOurs: number;
  lsOpenssh: number;
}

/**
 * Session start-up, in ms (medians): a refused command (the gate parses, decides, audits and says
 * no) against OpenSSH's sftp-server started and hung up on at once, and a bare `node -e 0`; an
 * `sftp -b` session that lists the root, against each server.
 */
function startup(ourServer: Server, theirs: Server, work: string): Starts {
  const config = path.join(work, "ours", "config.json");
  const env = { PATH: "/usr/bin:/bin", SSH_CLIENT: "127.0.0.1 1 22" };
  const ls = path.join(work, "batch-ls");
  fs.writeFileSync(ls, "ls\n");
  const lsRun = (s: Server) => startups([SFTP, "-q", "-b", ls, "-D", s.wrapper], { PATH: "/usr/bin:/bin", VB_BENCH_RSS: `${ls}.rss` });
  return {
    refused: startups([LAUNCHER, "--config", config], { ...env, SSH_ORIGINAL_COMMAND: "rm -rf /" }, 1),
    opensshBare: startups([OPENSSH_SERVER], env),
    node: startups(["/usr/bin/node", "-e", "0"], env),
    nodeCerts: CERTS === undefined ? undefined : startups(["/usr/bin/node", "-e", "0"], { ...env, NODE_EXTRA_CA_CERTS: CERTS }),
    lsOurs: lsRun(ourServer),
    lsOpenssh: lsRun(theirs),
  };
}

function verify(s: Server, work: string, dl: string, bigHash: string): void {
  const problems: string[] = [];
  if (hashFile(path.join(s.root, "big.bin")) !== bigHash) problems.push("uploaded big file differs");
  if (hashFile(path.join(dl, "big.bin")) !== bigHash) problems.push("downloaded big file differs");
  if (hashFile(path.join(s.root, "big-r64.bin")) !== bigHash) problems.push("big file uploaded with -R 64 differs");
  if (s.name === "ours") {
    // What we promise besides the bytes: each published file's SHA-256 in the audit log.
    const published = new Map<string, string>();
    for (const l of fs.readFileSync(path.join(path.dirname(s.root), "audit.log"), "utf8").split("\n"))
      if (l.includes('"publish"')) {
        const j = JSON.parse(l) as { event: string; path: string; sha256: string };
        if (j.event === "publish") published.set(j.path, j.sha256);
      }
    if (published.get("big.bin") !== bigHash || published.get("big-r64.bin") !== bigHash) problems.push("the audit log lacks the big file's SHA-256");
    const small = [...published.keys()].filter((p) => p.startsWith("small/"));
    if (small.length !== SMALL || small.some((p) => published.get(p) !== crypto.createHash("sha256").update(fs.readFileSync(path.join(s.root, p))).digest("hex")))
      problems.push("the audit log lacks a small file's SHA-256");
  }
  if (!sameTree(path.join(work, "src/small"), path.join(s.root, "small"))) problems.push("uploaded small files differ");
  if (!sameTree(path.join(work, "src/small"), path.join(dl, "small"))) problems.push("downloaded small files differ");
  if (problems.length) throw new Error(`${s.name}: ${problems.join("; ")}`);
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

async function main(): Promise<number> {
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
    const CONCURRENT: Op = { name: `${SESSIONS} sessions x ${SESSION_MIB} MiB up`, bytes: SESSIONS * (SESSION_MIB << 20), files: SESSIONS, batch: () => "" };
    const ALL = [...OPS, CONCURRENT];
    const rows: Array<{ round: number; op: Op; ours: Result; openssh: Result }> = [];
    const starts: Starts[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which server goes first, so neither always gets the warmer page cache.
      const servers = round % 2 ? [ours, openssh] : [openssh, ours];
      const results: Record<string, Result[]> = {};
      const made: Record<string, Server> = {};
      for (const make of servers) {
        const base = path.join(work, make === ours ? "ours" : "openssh");
        fs.rmSync(base, { recursive: true, force: true });
        const s = make(work);
        made[s.name] = s;
        const dl = path.join(work, `dl-${s.name}`);
        fs.rmSync(dl, { recursive: true, force: true });
        fs.mkdirSync(dl);
        const note = (op: Op, r: Result) => process.stdout.write(`  round ${round} ${pad(s.name, 8)} ${pad(op.name, 34)} ${r.seconds.toFixed(2)} s\n`);
        results[s.name] = OPS.map((op) => {
          const r = transfer(s, op, work, dl, round);
          note(op, r);
          return r;
        });
        verify(s, work, dl, bigHash);
        fs.rmSync(dl, { recursive: true, force: true });
        fs.rmSync(path.join(s.root, "big.bin"));
        fs.rmSync(path.join(s.root, "big-r64.bin"));
        const c = await concurrent(s, work, round);
        note(CONCURRENT, c);
        results[s.name]!.push(c);
      }
      ALL.forEach((op, i) => rows.push({ round, op, ours: results.ours![i]!, openssh: results.openssh![i]! }));
      starts.push(startup(made.ours!, made.openssh!, work));
    }
    const rate = (op: Op, r: Result) => op.bytes / MB / r.seconds;
    const isUpload = (op: Op) => op.name.includes(" up") || op.name.startsWith("upload");
    // Ours / OpenSSH within one round; until the bytes are on disk: the transfer and the sync(1) after it.
    const ratio = (o: Result, s: Result) => s.seconds / o.seconds;
    const syncRatio = (o: Result, s: Result) => (s.seconds + s.syncSeconds) / (o.seconds + o.syncSeconds);
    const row = (label: string, op: Op, o: Result, s: Result, r = ratio(o, s), rs = syncRatio(o, s)) =>
      [
        pad(label, 7),
        pad(op.name, 36),
        pad(rate(op, o).toFixed(1), 11, true),
        pad(rate(op, s).toFixed(1), 14, true),
        pad(`${r.toFixed(2)}x`, 8, true),
        pad(isUpload(op) ? `${rs.toFixed(2)}x` : "", 10, true),
        pad(op.files > 1 ? (op.files / o.seconds).toFixed(0) : "", 14, true),
        pad(op.files > 1 ? (op.files / s.seconds).toFixed(0) : "", 9, true),
        pad(`${(o.rssKiB / 1024).toFixed(1)}M`, 10, true),
        pad(`${(s.rssKiB / 1024).toFixed(1)}M`, 9, true),
      ].join("");
    // The median of the rounds' times (and the highest RSS of any round).
    const med = (pick: (r: (typeof rows)[number]) => Result, op: Op): Result => {
      const of = rows.filter((r) => r.op === op).map(pick);
      return { seconds: median(of.map((r) => r.seconds)), rssKiB: Math.max(...of.map((r) => r.rssKiB)), syncSeconds: median(of.map((r) => r.syncSeconds)) };
    };
    // The median row's ratios are the median of the rounds' own ratios, never one server's median
    // time over the other's (which may come from different rounds).
    const medRow = (op: Op) => {
      const of = rows.filter((r) => r.op === op);
      const r = median(of.map((x) => ratio(x.ours, x.openssh)));
      const rs = median(of.map((x) => syncRatio(x.ours, x.openssh)));
      return row("median", op, med((x) => x.ours, op), med((x) => x.openssh, op), r, rs);
    };
    const ms = (pick: (s: Starts) => number) => median(starts.map(pick));
    // Likewise the median of the rounds' own ratios.
    const times = (a: (s: Starts) => number, b: (s: Starts) => number) => `${median(starts.map((s) => a(s) / b(s))).toFixed(2)}x`;
    const lines = [
      "",
      `validate-backup bench: node ${process.version}, ${new Date().toISOString()}, MB = 10^6 bytes, RSS = peak resident set (GNU time; concurrent: the largest session)`,
      `${pad("round", 7)}${pad("transfer", 36)}${pad("ours MB/s", 11, true)}${pad("OpenSSH MB/s", 14, true)}${pad("ratio", 8, true)}${pad("+sync", 10, true)}${pad("files/s ours", 14, true)}${pad("OpenSSH", 9, true)}${pad("RSS ours", 10, true)}${pad("OpenSSH", 9, true)}`,
      ...rows.map(({ round, op, ours: o, openssh: s }) => row(String(round), op, o, s)),
      ...(ROUNDS > 1 ? ["", `median of ${ROUNDS} rounds (RSS: the highest)`, ...ALL.map(medRow)] : []),
      "",
      `session start-up, median of ${STARTS} x ${ROUNDS} rounds (ms):`,
      `  refused command ${ms((s) => s.refused).toFixed(1)}, OpenSSH's sftp-server started and hung up on ${ms((s) => s.opensshBare).toFixed(1)} (${times((s) => s.refused, (s) => s.opensshBare)}), node -e 0 ${ms((s) => s.node).toFixed(1)} (${times((s) => s.refused, (s) => s.node)})`,
      ...(CERTS === undefined
        ? []
        : [`  node -e 0 with this environment's NODE_EXTRA_CA_CERTS ${ms((s) => s.nodeCerts!).toFixed(1)} (refused: ${times((s) => s.refused, (s) => s.nodeCerts!)}; the launcher starts ours with env -i)`]),
      `  sftp -b 'ls' session: ours ${ms((s) => s.lsOurs).toFixed(1)}, OpenSSH's ${ms((s) => s.lsOpenssh).toFixed(1)} (${times((s) => s.lsOurs, (s) => s.lsOpenssh)})`,
      "",
      "+sync: the ratio counting each upload until its bytes were on disk (the transfer, then a sync(1)):",
      "  ours fsyncs every file before its name appears (an SFTP CLOSE of a new name no profile rule judges is",
      "  answered first, the rest only after), OpenSSH's sftp-server leaves them to the kernel.",
      `peak RSS of our server over the run: ${(Math.max(...rows.map((r) => r.ours.rssKiB)) / 1024).toFixed(1)} MiB (goal: under 80 MiB)`,
    ];
    process.stdout.write(lines.join("\n") + "\n");
    return 0;
  } finally {
    if (cleanup) fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
