// Runs the transpiled tap test files (dist/test/**/*.test.js), each in its own node, two at a time.
// Why not tap's runner: it starts every test file under an ESM loader hook of its own
// (@tapjs/processinfo, there for coverage, which we do not collect) that cost each file 3 to 8 s of
// CPU on a two-core machine, it spends ~15 s before the first file, and it rebuilds its plugins on
// its first run after `npm ci` (73 s here): together a fifth of CI's 20-minute budget. The files are
// still tap tests (a tap file run by plain node prints its TAP); `npx tap FILE` still runs one.
//
// node scripts/run-tests.mjs [--tap] [--jobs N] [FILE...]
//   --tap   print every file's TAP (indented as a subtest, as tap's TAP reporter does), for CI to count
//   default prints one line per file, and the whole TAP of a file that failed
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const FILE_TIMEOUT_S = 900;

function parseArgs(argv) {
  const opts = { tap: false, jobs: Math.min(2, os.availableParallelism()), files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--tap") opts.tap = true;
    else if (a === "--jobs" && /^[1-9][0-9]?$/.test(argv[i + 1] ?? "")) opts.jobs = Number(argv[++i]);
    else if (a.startsWith("-")) throw new Error(`unknown option ${a} (known: --tap, --jobs N)`);
    else opts.files.push(a);
  }
  return opts;
}

function testFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "helpers" ? [] : testFiles(p);
    return e.name.endsWith(".test.js") ? [p] : [];
  });
}

/** One file in its own node; resolves with its output, exit status and duration. */
function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    // TAP_TIMEOUT: tap's own per-file limit, 30 s unless told; tap's runner would pass ours.
    const env = { ...process.env, TAP_TIMEOUT: String(FILE_TIMEOUT_S) };
    const child = spawn(process.execPath, ["--enable-source-maps", file], { env, stdio: ["ignore", "pipe", "pipe"] });
    // Apart: a stderr chunk in the middle of a TAP line would hide that line from CI's count.
    const out = [];
    const err = [];
    child.stdout.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => err.push(d));
    const timer = setTimeout(() => child.kill("SIGKILL"), (FILE_TIMEOUT_S + 30) * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString("utf8").replace(/\n$/, "");
      const asComments = stderr ? "\n" + stderr.split("\n").map((l) => `# stderr: ${l}`).join("\n") : "";
      resolve({ file, code, signal, out: Buffer.concat(out).toString("utf8").replace(/\n$/, "") + asComments, ms: Date.now() - started });
    });
  });
}

/** Counts of a file's own TAP: its top-level "# { total, pass, ... }" comment, if it got that far. */
function counts(out) {
  const m = out.match(/^# (\{ total: .*\})$/m);
  if (!m) return undefined;
  const c = {};
  for (const [, k, v] of m[1].matchAll(/(\w+): (\d+)/g)) c[k] = Number(v);
  return c;
}

// Longest first: a long file left for the end would leave a core idle. The order comes from the last
// run's durations, or in a fresh clone from test/durations.json (seconds at the quick scale, CI's);
// a stale figure only changes the order.
const TIMES = "dist/.test-times.json";
function lastDurations() {
  try {
    return JSON.parse(fs.readFileSync(TIMES, "utf8"));
  } catch {}
  try {
    const seed = JSON.parse(fs.readFileSync("test/durations.json", "utf8"));
    return Object.fromEntries(Object.entries(seed).map(([f, s]) => [path.join("dist/test", f), s * 1000]));
  } catch {
    return {};
  }
}
const last = lastDurations();

const opts = parseArgs(process.argv.slice(2));
const files = (opts.files.length ? opts.files : testFiles("dist/test")).sort().sort((a, b) => (last[b] ?? 0) - (last[a] ?? 0));
if (!files.length) throw new Error("no test files (run `node scripts/build-tests.mjs` first)");

const queue = [...files];
const results = [];
const total = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 };
if (opts.tap) console.log("TAP version 14");

function report(r) {
  const c = counts(r.out);
  const ok = r.code === 0 && r.signal === null && c !== undefined && !c.fail;
  for (const k of Object.keys(total)) total[k] += c?.[k] ?? 0;
  if (!c) total.fail++; // died before its summary: count the file itself as a failure
  const why = ok ? "" : ` (exit ${r.signal ?? r.code}${c ? "" : ", no summary"})`;
  const line = `${ok ? "ok" : "not ok"} ${results.length + 1} - ${r.file}${why} # time=${r.ms}ms`;
  if (opts.tap || !ok) {
    console.log(`# Subtest: ${r.file}`);
    for (const l of r.out.split("\n")) console.log(l ? `    ${l}` : "");
  }
  console.log(line);
  results.push({ ...r, ok });
}

async function worker() {
  for (let f = queue.shift(); f !== undefined; f = queue.shift()) report(await runFile(f));
}

const t0 = Date.now();
await Promise.all(Array.from({ length: opts.jobs }, worker));
console.log(`1..${results.length}`);
const failed = results.filter((r) => !r.ok);
console.log(`# { ${Object.entries(total).map(([k, v]) => `${k}: ${v}`).join(", ")} }`);
console.log(`# ${files.length} files, ${failed.length} failed${failed.length ? ": " + failed.map((r) => r.file).join(", ") : ""}, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
const times = { ...last, ...Object.fromEntries(results.map((r) => [r.file, r.ms])) };
fs.writeFileSync(TIMES, JSON.stringify(Object.fromEntries(Object.entries(times).filter(([f]) => fs.existsSync(f)))));
process.exitCode = failed.length ? 1 : 0;
