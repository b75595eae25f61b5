import t from "tap";
import { sandbox, snapshotAll, runGate, auditLines } from "./helpers/env.js";

t.test("true is allowed and audited", async (t) => {
  const sb = sandbox(t);
  const r = await runGate(sb, "true");
  t.equal(r.code, 0);
  const lines = auditLines(sb);
  t.match(lines[0], { event: "request", decision: "allow", command: "true", client: "127.0.0.1", label: "test" });
  t.match(lines.at(-1), { event: "session-end", exit: 0 });
});

t.test("a shell command is refused with no side effect", async (t) => {
  const sb = sandbox(t, { files: { "a.gpg": "A" } });
  const before = snapshotAll(sb);
  const r = await runGate(sb, "ls; rm -rf ~");
  t.not(r.code, 0);
  t.match(r.stderr, /^validate-backup: shell syntax .~. is refused/);
  t.match(auditLines(sb)[0], { decision: "deny", command: "ls; rm -rf ~" });
  t.same(snapshotAll(sb), before);
});
