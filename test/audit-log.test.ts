// Four processes append thousands of audit lines to one log at the same moment, through the real
// openAudit (the built dist/, as the gate runs it) with the log's lock file. No line may be torn or
// interleaved: every line parses, every writer's lines are all there, in its own order, and (when
// the log is hash-chained) each line names the hash of the one before it.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import { TOP } from "./helpers/env.js";
import { size } from "./helpers/scale.js";

const WRITERS = 4;
const LINES = size("VB_AUDIT_LINES", 2500, 600);
const LOG_MODULE = path.join(TOP, "dist/src/audit/log.js");

// Each writer: wait at a barrier (all ready, then 'go'), then log as fast as it can. Lines vary in
// size up to a few KiB (more than PIPE_BUF) and carry a newline and a U+2028 that must be escaped.
const WRITER = `
import fs from "node:fs";
import { openAudit } from ${JSON.stringify(LOG_MODULE)};
const [file, lock, dir, id, n] = process.argv.slice(1);
const audit = openAudit(file, lock, { label: "concurrency", writer: Number(id) });
fs.writeFileSync(dir + "/ready." + id, "");
while (!fs.existsSync(dir + "/go")) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
for (let i = 0; i < Number(n); i++)
  audit.event("test", { seq: i, pad: "x".repeat((i * 7919) % 3000), evil: '\\n{"event":"forged"}\\u2028' + id });
process.exit(audit.ok ? 0 : 3);
`;

function startWriter(dir: string, log: string, lock: string, id: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", WRITER, log, lock, dir, String(id), String(LINES)], { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("close", resolve);
  });
}

t.test(`${WRITERS} processes x ${LINES} lines never interleave`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vb-audit-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, "audit.log");
  const lock = path.join(dir, "audit.lock");
  const done = Array.from({ length: WRITERS }, (_, id) => startWriter(dir, log, lock, id));
  while (fs.readdirSync(dir).filter((n) => n.startsWith("ready.")).length < WRITERS) await new Promise((r) => setTimeout(r, 20));
  const started = Date.now();
  fs.writeFileSync(path.join(dir, "go"), "");
  t.same(await Promise.all(done), Array(WRITERS).fill(0), "every writer exits 0 (its log stayed ok)");
  t.comment(`${WRITERS * LINES} lines in ${Date.now() - started} ms`);

  const raw = fs.readFileSync(log);
  t.equal(raw.at(-1), 0x0a, "the log ends with a newline");
  t.notOk(raw.includes(Buffer.from("\u2028")), "no raw U+2028 in the file");
  const lines = raw.subarray(0, -1).toString("utf8").split("\n");
  t.equal(lines.length, WRITERS * LINES, "one line per event, no more");
  const next = Array(WRITERS).fill(0);
  let bad = 0;
  let outOfOrder = 0;
  let chained = 0;
  let prevHash = crypto.createHash("sha256").update("").digest("hex");
  let switches = 0;
  let lastWriter = -1;
  for (const line of lines) {
    let j: { writer: number; seq: number; evil: string; event: string; prev?: string };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      bad++;
      continue;
    }
    if (j.event !== "test" || !j.evil.startsWith("\\x0a") || !j.evil.includes("\\u2028")) bad++;
    if (j.seq !== next[j.writer]) outOfOrder++;
    next[j.writer] = j.seq + 1;
    if (j.writer !== lastWriter) switches++;
    lastWriter = j.writer;
    if (j.prev !== undefined) {
      if (j.prev === prevHash) chained++;
      prevHash = crypto.createHash("sha256").update(line).digest("hex");
    }
  }
  t.equal(bad, 0, "every line is one whole JSON event with its control characters escaped");
  t.equal(outOfOrder, 0, "each writer's lines are all there, in its order");
  t.same(next, Array(WRITERS).fill(LINES), "no line lost");
  t.ok(switches > WRITERS * 4, `the writers really ran at the same time (${switches} switches between writers)`);
  if (lines[0]?.includes('"prev":')) t.equal(chained, lines.length, "the hash chain is linear: each line names the one before");
});
