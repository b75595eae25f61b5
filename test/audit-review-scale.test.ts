// The review scales (issue 18, item 4): a log of 1,000,000 lines from 100,000 client addresses is
// reviewed in one streaming pass, in linear time and bounded memory; at most NAMED_NEW new clients
// are named and the rest summarised (it used to print one anomaly per address listing all earlier
// ones: 152 MB for 3,000 addresses, "Invalid string length" for 6,000). VB_TEST_SCALE=quick: 100,000
// lines from 10,000 addresses.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { BIN, run } from "./helpers/env.js";
import { size } from "./helpers/scale.js";
import { writeLog } from "./helpers/audit-log.js";
import { Reviewer, LISTED_REFUSALS, type Review } from "../src/audit/review.js";
import { NAMED_NEW } from "../src/audit/clients.js";
import { readLines, prevOf } from "../src/audit/chain.js";

const SESSIONS = size("VB_AUDIT_SESSIONS", 100_000, 10_000); // 10 lines each
const CLIENTS = SESSIONS; // every session from an address of its own

t.test(`audit over ${SESSIONS * 10} lines from ${CLIENTS} client addresses`, async (t) => {
  const dir = fs.mkdtempSync("/tmp/vb-audit-scale-");
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, "audit.log");
  const g = writeLog(log, SESSIONS, CLIENTS);
  const started = Date.now();
  const r = await run([BIN, "audit", "--file", log, "--json"], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 600_000 });
  t.equal(r.code, 0, r.stderr);
  t.comment(`audit --json: ${Date.now() - started} ms, ${r.stdout.length} bytes of output`);
  t.ok(r.stdout.length < 2 * 1024 * 1024, `the output is bounded (${r.stdout.length} bytes)`);
  const review = JSON.parse(r.stdout.toString()) as Review;
  t.match(review.files, [{ lines: g.lines, chain: /^intact/ }]);
  const named = review.anomalies.filter((a) => a.kind === "new client");
  t.equal(named.length, NAMED_NEW, "a few hundred new clients named");
  t.match(named[0]!.detail, /^first session from 10\.0\.0\.1 \(known: 10\.0\.0\.0\)$/);
  t.match(named.at(-1)!.detail, new RegExp(`\\(known: 10\\.0\\.0\\.0, 10\\.0\\.0\\.1, 10\\.0\\.0\\.2 and ${NAMED_NEW - 3} more\\)$`));
  t.match(
    review.anomalies.filter((a) => a.kind === "new clients"),
    [{ label: "big", detail: new RegExp(`^${CLIENTS - 1 - NAMED_NEW} more new client addresses between .*from= in authorized_keys`) }],
    "the rest in one line",
  );
  t.equal(review.refusalCount, g.refusals, "every refusal counted");
  t.equal(review.refusals.length, LISTED_REFUSALS, "the latest listed");
  t.match(review.keys, [{ label: "big", sessions: SESSIONS, refused: g.refusals, files: g.publishes, clientCount: CLIENTS }]);
  t.equal(review.keys[0]!.clients.length, 10);

  const text = await run([BIN, "audit", "--file", log], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 600_000 });
  t.equal(text.code, 0, text.stderr);
  t.ok(text.stdout.length < 2 * 1024 * 1024, `the text review is bounded too (${text.stdout.length} bytes)`);
  t.match(text.stdout.toString(), new RegExp(`Refusals \\(${g.refusals}\\)\\n +${g.refusals.toLocaleString("en-US")} in all; per key and kind:`));
});
