// A log the key's account may write but not read (a careless mode, or a deliberate one): the gate
// cannot link its lines into the hash chain, but it must not stop logging either. Its lines are
// written, marked unchained ("prev":"unreadable"), and `audit --verify` never passes them.
import t from "tap";
import fs from "node:fs";
import { sandbox, runGate, gateIds, isRoot } from "./helpers/env.js";
import { runRoot } from "./helpers/duplicity.js";

const lines = (f: string) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean);

t.test("a write-only log: sessions are served and logged, their lines marked unchained, verify reports them", async (t) => {
  if (!isRoot) return t.plan(0, "needs root: the log is made root's, writable by the test user's group only");
  const sb = sandbox(t);
  t.equal((await runGate(sb, "true")).code, 0);
  t.equal((await runRoot(sb, ["audit", "--verify"])).code, 0, "verify passes the log as it was");
  const chained = lines(sb.audit).length;
  fs.chownSync(sb.audit, 0, gateIds().gid);
  fs.chmodSync(sb.audit, 0o620);
  const r = await runGate(sb, "true");
  t.equal(r.code, 0, "the session is served");
  const added = lines(sb.audit).slice(chained).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(added.length > 0, `its lines are written (${added.length})`);
  t.ok(added.every((j) => j.prev === "unreadable"), "each marked unchained");
  t.match(added[0], { event: "request", decision: "allow" });
  const v = await runRoot(sb, ["audit", "--verify"]);
  t.not(v.code, 0, "verify does not pass them");
  const said = v.stdout.toString();
  for (let n = chained + 1; n <= chained + added.length; n++)
    t.match(said, new RegExp(`line ${n} is not chained: it was written by a session that could not read the log .*let the key's account read the log`), `line ${n}: said why, and what to do`);
});
