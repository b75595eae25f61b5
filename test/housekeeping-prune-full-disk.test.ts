// Prune's compaction of state/arrivals.log on a really full filesystem (a small loop ext4): the
// rewrite of the record is cut short by ENOSPC. Prune must say so and exit non-zero, remove only
// what it should, lose no line of the record, and the next prune, once there is room, finish the job.
//
// Why not the tail copy alone: the tail is what sessions append between compaction's read and its
// rename, a window with no hook a test could stop in without racing the prune process. The tail is
// now copied into the new file before the rename (vault/arrivals.ts), through the same writes as the
// rest of the new file, so ENOSPC while writing the new file is the fault a failing tail copy meets.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { auditLines } from "./helpers/env.js";
import { sandboxOn, fillUp } from "./helpers/mount.js";
import { chain, plant, runRoot, exists } from "./helpers/duplicity.js";
import { ARRIVALS_FILE } from "../src/vault/arrivals.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const NOW = Date.now();
const base = Date.UTC(2025, 0, 1);

function recordLines(state: string): string[] {
  return fs.readFileSync(path.join(state, ARRIVALS_FILE), "utf8").split("\n");
}

t.test("prune on a full filesystem: the record's rewrite fails, prune reports and audits the rest, exits 4, no line is lost; the next prune compacts", async (t) => {
  const sb = sandboxOn(t, "ext4");
  if (!sb) return;
  sb.configure({ root: sb.root, limits: { minFreeBytes: 0 }, housekeeping: { retentionDays: 1 } });
  const A = chain(base, 2);
  const C = chain(base + 20 * DAY, 1);
  plant(sb, "host", A, NOW - 30 * DAY);
  plant(sb, "host", C, NOW - HOUR);
  // Files prune leaves alone, each with its record: the compacted record is ~170 KB, far more than
  // the room left below (and than what removing A frees).
  const others = Array.from({ length: 1000 }, (_, i) => `other-${String(i).padStart(4, "0")}-${"x".repeat(100)}.txt`);
  plant(sb, "host", others, NOW - 40 * DAY);
  const before = recordLines(sb.state);
  const filler = fillUp(path.dirname(sb.root), 8192);
  const clock = ["--now", new Date(NOW + 36 * HOUR).toISOString()];

  const r = await runRoot(sb, ["prune", "--keep-full", "1", ...clock]);
  t.equal(r.code, 4, `exit 4 (stdout ${JSON.stringify(r.stdout)})`);
  t.match(r.stderr.toString(), /1 entries failed; the rest was done:\n {2}state:arrivals\.log: failed: .*could not be compacted \(ENOSPC\).*left as it was/, "stderr says what failed and what it means");
  t.ok(A.every((n) => !exists(path.join(sb.root, "host", n))), "the removable chain A went (before the compaction)");
  t.match(r.stdout.toString(), /removed host\/duplicity-full\.20250101T000000Z/, "the report names the removed chain");
  t.match(auditLines(sb).filter((l) => l.event === "prune-chain" || l.event === "prune"), [{ event: "prune-chain", full: "20250101T000000Z" }, { event: "prune", removedChains: 1, failed: 1 }], "its removal is audited, and the failure");
  t.ok([...C, ...others].every((n) => exists(path.join(sb.root, "host", n))), "nothing else was removed");
  const after = recordLines(sb.state);
  t.same(after, before, "the record is the one before, whole: no line lost, none torn");
  t.same(fs.readdirSync(sb.state).filter((n) => n.startsWith(`${ARRIVALS_FILE}.`)), [], "no temporary file left");

  fs.rmSync(filler);
  const again = await runRoot(sb, ["prune", "--keep-full", "1", ...clock]);
  t.equal(again.code, 0, again.stderr);
  const paths = recordLines(sb.state)
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { p: string }).p);
  t.ok([...C, ...others].every((n) => paths.includes(`host/${n}`)), "every kept file keeps its record");
  t.notOk(paths.some((p) => A.includes(p.slice(5))), "the removed chain's records are dropped now");
  t.equal(paths.length, C.length + others.length, "one line per file");
  t.match(auditLines(sb).filter((l) => l.event === "prune").slice(-1), [{ removedChains: 0, failed: 0 }], "the second run is audited");
});
