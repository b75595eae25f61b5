// The arrivals record is appended without a lock (one write(2) on an O_APPEND descriptor per line),
// while root's prune compacts it by writing a new file and renaming it into place. No line may be
// lost to that race: real writer processes append as fast as they can while this process compacts
// over and over, and every line they wrote must be in the record at the end.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { compactArrivals, readArrivals, recordArrival } from "../src/vault/arrivals.js";
import { size } from "./helpers/scale.js";

t.setTimeout(5 * 60 * 1000);

const ARRIVALS = fileURLToPath(new URL("../src/vault/arrivals.js", import.meta.url));
const LINES = size("VB_ARRIVALS_LINES", 20_000, 5_000);
const WRITERS = 2;

/** A writer process: LINES arrivals named `<tag>/<i>`, as fast as it can; prints "done". */
function writer(state: string, tag: string): Promise<number | null> {
  const script = `import(${JSON.stringify(ARRIVALS)}).then(({ recordArrival }) => {
    for (let i = 0; i < ${LINES}; i++) recordArrival(${JSON.stringify(state)}, "${tag}/" + i, { dev: 1, ino: i + 1 }, 1000 + i, "k");
  });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "inherit"] });
  return new Promise((resolve) => child.on("close", (code) => resolve(code)));
}

t.test(`${WRITERS} writers of ${LINES} lines each against compactions in a loop: no line lost`, async (t) => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), "vb-arrivals-"));
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  fs.mkdirSync(path.join(state, "locks"));
  recordArrival(state, "before", { dev: 1, ino: 999_999 }, 1);
  const stateFd = fs.openSync(state, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const locksFd = fs.openSync(path.join(state, "locks"), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => {
    fs.closeSync(stateFd);
    fs.closeSync(locksFd);
  });
  let running = WRITERS;
  const done = Array.from({ length: WRITERS }, (_, w) => writer(state, `w${w}`).then((code) => (running--, code)));
  let compactions = 0;
  while (running > 0) {
    compactArrivals(stateFd, locksFd, () => true);
    compactions++;
    await new Promise((r) => setImmediate(r));
  }
  const codes = await Promise.all(done);
  t.same(codes, Array(WRITERS).fill(0), "every writer finished");
  t.ok(compactions >= 10, `${compactions} compactions ran while they wrote`);
  const got = readArrivals(stateFd);
  const missing: string[] = [];
  for (let w = 0; w < WRITERS; w++) for (let i = 0; i < LINES; i++) if (!got.has(`w${w}/${i}`)) missing.push(`w${w}/${i}`);
  t.same(missing.slice(0, 20), [], `no arrival lost (${missing.length} missing of ${WRITERS * LINES})`);
  t.ok(got.has("before"), "what was there before is kept");
  t.equal(got.size, WRITERS * LINES + 1, "one entry per file");
  const leftovers = fs.readdirSync(state).filter((n) => n !== "arrivals.log" && n !== "locks");
  t.same(leftovers, [], "no temporary file left");
});
