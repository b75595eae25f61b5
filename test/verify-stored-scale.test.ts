// verify --stored on 100,000 small files and a synthetic audit log of their publishes (a tenth
// of them uploaded under a temporary name and renamed, as pexpect+sftp does, and some removed by
// their session): the real binary judges every one, in time that grows linearly (25,000 files vs
// 100,000), and its peak memory is reported.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, run, TOP, type Sandbox } from "./helpers/env.js";
import { size, QUICK } from "./helpers/scale.js";

// Building 100,000 files and running the binary four times takes minutes on a loaded machine.
t.setTimeout(30 * 60_000);

const PER_DIR = 1000;
const CLI = path.join(TOP, "dist/app/cli.js");

const sha = (b: string) => crypto.createHash("sha256").update(b).digest("hex");

function line(event: string, fields: Record<string, unknown>): string {
  return JSON.stringify({ level: "info", time: new Date().toISOString(), label: "test", sid: "scale-1", client: "127.0.0.1", event, ...fields }) + "\n";
}

/** `total` files in directories of PER_DIR, and the log lines that published them. */
function build(sb: Sandbox, total: number): void {
  const fd = fs.openSync(sb.audit, "w");
  let chunk = "";
  const flush = () => {
    fs.writeSync(fd, chunk);
    chunk = "";
  };
  for (let i = 0; i < total; i++) {
    const dir = `d${Math.floor(i / PER_DIR)}`;
    if (i % PER_DIR === 0) fs.mkdirSync(path.join(sb.root, dir));
    const rel = `${dir}/duplicity-like-volume-${i}.gpg`;
    const content = `volume ${i} ${"x".repeat(i % 200)}\n`;
    fs.writeFileSync(path.join(sb.root, rel), content);
    const hash = sha(content);
    if (i % 10 === 0) {
      chunk += line("publish", { path: `${rel}.part`, size: content.length, sha256: hash });
      chunk += line("rename", { from: `${rel}.part`, to: rel });
    } else chunk += line("publish", { path: rel, size: content.length, sha256: hash });
    if (i % 97 === 0) {
      chunk += line("publish", { path: `${dir}/lock-${i}`, size: 5, sha256: sha("lock\n") });
      chunk += line("remove-own", { path: `${dir}/lock-${i}` });
    }
    if (chunk.length > 1 << 20) flush();
  }
  flush();
  fs.closeSync(fd);
}

/** Runs the bundle as root, with a hook that reports its peak resident memory (VmHWM) as it exits. */
async function verify(sb: Sandbox): Promise<{ code: number | null; out: string; ms: number; rssKiB: number }> {
  const hook = path.join(sb.dir, "rss.mjs");
  fs.writeFileSync(hook, `import fs from "node:fs";\nprocess.on("exit", () => fs.writeSync(2, "VmHWM " + /VmHWM:\\s+(\\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))[1] + "\\n"));\n`);
  const t0 = performance.now();
  const r = await run([process.execPath, "--import", hook, CLI, "verify", "--stored", "--config", sb.config], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 900_000 });
  const ms = performance.now() - t0;
  return { code: r.code, out: r.stdout.toString() + r.stderr, ms, rssKiB: Number(/VmHWM (\d+)/.exec(r.stderr)?.[1]) };
}

async function measure(t: Test, total: number): Promise<{ files: number; ms: number }> {
  const sb = sandbox(t, { config: { profile: "plain" } });
  build(sb, total);
  const r = await verify(sb);
  t.equal(r.code, 0, `${total}: exit 0 (${r.out.slice(-400)})`);
  t.match(r.out, new RegExp(`verify --stored: ${total} entries found and judged \\(0 kept versions\\), ${total} recorded, ${total} match the audit log; 0 changed, 0 missing, 0 unrecorded, 0 unreadable: OK`), `${total}: every file judged and matched`);
  t.comment(`${total} files: verify --stored took ${r.ms.toFixed(0)} ms (${((r.ms / total) * 1000).toFixed(1)} µs per file, node's start included), peak RSS ${(r.rssKiB / 1024).toFixed(1)} MiB`);
  // One byte of one file in the middle changed: found among all the others.
  const victim = path.join(sb.root, `d${Math.floor(total / 2 / PER_DIR)}`, `duplicity-like-volume-${Math.floor(total / 2)}.gpg`);
  const b = fs.readFileSync(victim);
  b[0] = b[0]! ^ 0x20;
  fs.writeFileSync(victim, b);
  const bad = await verify(sb);
  t.equal(bad.code, 1, `${total}: one changed byte is found`);
  t.match(bad.out, new RegExp(`CHANGED +${path.relative(sb.root, victim).replace(/\./g, "\\.")} `));
  t.match(bad.out, /1 changed, 0 missing, 0 unrecorded, 0 unreadable: 1 problem\(s\)/);
  return { files: total, ms: r.ms };
}

const BIG = size("VB_VERIFY_FILES", 100_000, 8_000);

t.test(`verify --stored on ${BIG} files: every one judged, in linear time, memory reported`, async (t) => {
  const small = await measure(t, BIG / 4);
  const big = await measure(t, BIG);
  const ratio = big.ms / big.files / (small.ms / small.files);
  t.comment(`time per file, ${BIG} vs ${BIG / 4}: x${ratio.toFixed(2)}`);
  // Loose: the machine is shared, and node's start weighs more in the smaller run; a quadratic
  // judge would be ~4x per file. At CI's small sizes fixed costs dominate: only reported there.
  if (!QUICK) t.ok(ratio < 2.5, `per-file time stays flat (x${ratio.toFixed(2)})`);
});
