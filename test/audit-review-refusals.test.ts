// Every refusal counts (issue 18, item 1): a refusal of each protocol, made through the real binary,
// is in `audit --denied`; 50 refusals in a minute from one key are a burst; a session's refusals
// past its logging cap are counted from its session-end line. And which events are refusals is a
// table (refusals.ts) that knows every event name the sources write.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { BIN, run, sandbox, runGate, auditLines, TOP } from "./helpers/env.js";
import { SftpClient, FX } from "./helpers/sftp-client.js";
import { gate, cFile } from "./helpers/scp-wire.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";
import { gpgHome } from "./helpers/pgp.js";
import { REFUSAL_EVENTS, KNOWN_EVENTS, refusalOf } from "../src/audit/refusals.js";
import { Reviewer } from "../src/audit/review.js";

const auditCmd = (args: string[]) => run([BIN, "audit", ...args], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });

interface Denied {
  refusalCount: number;
  refusals: { kind: string; event: string; code: string; what: string; client: string }[];
}

t.test("a refusal of each protocol, through the real binary, is in audit --denied", async (t) => {
  const sb = sandbox(t, { files: { "existing.gpg": "old bytes\n" } });
  await runGate(sb, "bash -c id");
  const sftp = SftpClient.gate(sb);
  await sftp.init();
  t.match((await sftp.remove("existing.gpg")).status, { code: FX.PERMISSION_DENIED }, "sftp: remove refused");
  await sftp.end();
  const scp = await gate(sb, "scp -t .", cFile("existing.gpg", "new bytes\n"));
  t.not(scp.code, 0, "scp: overwrite refused");
  const tree = localTree(t, { "existing.gpg": "changed bytes\n" });
  const rs = await rsyncClient(sb, ["-rt", `${tree}/`, "h:"]);
  t.not(rs.code, 0, "rsync: the changed file is not stored");
  t.equal(fs.readFileSync(path.join(sb.root, "existing.gpg"), "utf8"), "old bytes\n", "nothing changed");

  const r = await auditCmd(["--config", sb.config, "--denied", "--json"]);
  t.equal(r.code, 0, r.stderr);
  const denied = JSON.parse(r.stdout.toString()) as Denied;
  const kinds = denied.refusals.map((x) => x.kind);
  for (const k of ["command", "sftp", "scp", "rsync skip"]) t.ok(kinds.includes(k), `a ${k} refusal is listed (${JSON.stringify(kinds)})`);
  t.equal(denied.refusalCount, denied.refusals.length, "all counted");
  t.ok(denied.refusals.every((x) => x.client === "127.0.0.1"));
  t.match(
    denied.refusals.find((x) => x.kind === "sftp"),
    { what: "existing.gpg" },
  );
  const text = (await auditCmd(["--config", sb.config])).stdout.toString();
  t.match(text, new RegExp(`Refusals \\(${denied.refusalCount}\\)`));
  t.match(text, new RegExp(`KEY +SESSIONS +DENIED +REFUSALS .*\\n +test +\\d+ +1 +${denied.refusalCount} `), "the key's row counts every refusal, the denied session apart");
});

t.test("an upload the encryption guard refuses is in audit --denied", async (t) => {
  const g = gpgHome(t);
  const sb = sandbox(t, { config: { encryption: { required: true, recipients: [g.pub] } } });
  const sftp = SftpClient.gate(sb);
  await sftp.init();
  t.notMatch((await sftp.put("plain.txt", "not encrypted\n")).status, { code: 0 }, "refused");
  await sftp.end();
  t.notOk(fs.existsSync(path.join(sb.root, "plain.txt")), "nothing stored");
  const r = await auditCmd(["--config", sb.config, "--denied", "--json"]);
  const denied = JSON.parse(r.stdout.toString()) as Denied;
  t.match(
    denied.refusals.filter((x) => x.kind === "upload"),
    [{ event: "upload-refused", code: "NOT_ALLOWED", what: "plain.txt" }],
  );
});

t.test("50 refusals in a minute from one key are a burst", async (t) => {
  const sb = sandbox(t, { files: { "existing.gpg": "old bytes\n" } });
  const sftp = SftpClient.gate(sb);
  await sftp.init();
  for (let i = 0; i < 50; i++) await sftp.remove("existing.gpg");
  await sftp.end();
  t.equal(auditLines(sb).filter((l) => l.event === "refused").length, 50);
  const r = await auditCmd(["--config", sb.config, "--json"]);
  const review = JSON.parse(r.stdout.toString()) as { anomalies: { kind: string; detail: string }[]; refusalCount: number };
  t.equal(review.refusalCount, 50);
  t.match(
    review.anomalies.filter((a) => a.kind === "refusal burst"),
    [{ detail: /^50 refusals from 127\.0\.0\.1 between / }],
  );
});

/** A Reviewer that has seen one allowed session s1 of key k open at 00:00:00; at(s): that minute's second s. */
function allowedSession() {
  const rv = new Reviewer(undefined, 86_400_000, Date.parse("2026-01-01T00:10:00Z"));
  const base = { label: "k", client: "192.0.2.7", sid: "s1" };
  const at = (s: number) => `2026-01-01T00:00:${String(s).padStart(2, "0")}.000Z`;
  rv.line({ ...base, time: at(0), event: "request", decision: "allow" });
  return { rv, base, at };
}

t.test("refusals a session only counted (past its cap) are counted from its session-end", async (t) => {
  const { rv, base, at } = allowedSession();
  for (let i = 0; i < 3; i++) rv.line({ ...base, time: at(1 + i), event: "refused", op: "remove", code: "NOT_ALLOWED", reason: "no", path: "a" });
  rv.line({ ...base, time: at(5), event: "refused", op: "*", code: "QUOTA", anomaly: true, reason: "cap" });
  rv.line({ ...base, time: at(9), event: "session-end", refused: 207, exit: 0 });
  const r = rv.finish([]);
  t.equal(r.refusalCount, 207);
  t.equal(r.refusalsUnlogged, 204);
  t.equal(r.refusals.length, 3, "the logged ones are listed");
  t.match(r.keys, [{ label: "k", refused: 207, denied: 0 }]);
  t.match(r.anomalies.filter((a) => a.kind === "refusal burst"), [{ detail: /^207 refusals from 192\.0\.2\.7/ }]);
});

t.test("an scp session's refusals past its cap are counted as scp refusals, not sftp", async (t) => {
  const { rv, base, at } = allowedSession();
  for (let i = 0; i < 2; i++) rv.line({ ...base, time: at(1 + i), event: "refused", protocol: "scp", code: "IMMUTABLE", reason: "no", path: "a" });
  rv.line({ ...base, time: at(9), event: "session-end", refused: 5, exit: 1 });
  const r = rv.finish([]);
  t.equal(r.refusalCount, 5);
  t.equal(r.refusalsUnlogged, 3);
  t.same(r.refusalSummary.map((x) => `${x.kind} ${x.code} ${x.count}`).sort(), ["scp IMMUTABLE 2", "scp UNLOGGED 3"]);
});

t.test("refusals a session only counted carry its protocol, from the plan of its request line", async (t) => {
  // A session can count refusals it wrote no line of: past the byte budget of its drop-class lines
  // (audit/budget.ts), or after its written ones fell before --since. Its label must still be its protocol.
  const rv = new Reviewer(undefined, 86_400_000, Date.parse("2026-01-01T00:10:00Z"));
  const at = (s: number) => `2026-01-01T00:00:${String(s).padStart(2, "0")}.000Z`;
  for (const [i, plan] of ["sftp", "scp", "rsync"].entries()) {
    const base = { label: "k", client: "192.0.2.7", sid: `s-${plan}` };
    rv.line({ ...base, time: at(i), event: "request", decision: "allow", command: plan, plan });
    rv.line({ ...base, time: at(10 + i), event: "session-end", refused: 4 + i, exit: 1 });
  }
  const r = rv.finish([]);
  t.equal(r.refusalCount, 15);
  t.equal(r.refusalsUnlogged, 15);
  t.same(r.refusalSummary.map((x) => `${x.kind} ${x.code} ${x.count}`).sort(), ["other UNLOGGED 6", "scp UNLOGGED 5", "sftp UNLOGGED 4"], "each session's own protocol; one that counts no refusal of its own kind is not called sftp");
});

t.test("a session open across --since: its plan labels the refusals it only counted; those it wrote before are not counted again", async (t) => {
  const rv = new Reviewer(Date.parse("2026-01-01T00:00:30Z"), 86_400_000, Date.parse("2026-01-01T00:10:00Z"));
  const base = { label: "k", client: "192.0.2.7", sid: "s1" };
  rv.line({ ...base, time: "2026-01-01T00:00:00.000Z", event: "request", decision: "allow", command: "scp -t .", plan: "scp" });
  for (const s of [10, 20]) rv.line({ ...base, time: `2026-01-01T00:00:${s}.000Z`, event: "refused", protocol: "scp", code: "IMMUTABLE", reason: "no", path: "a" });
  rv.line({ ...base, time: "2026-01-01T00:00:40.000Z", event: "session-end", refused: 5, exit: 1 });
  const r = rv.finish([]);
  t.equal(r.refusalCount, 3, "the 2 written before --since are outside the window, the 3 only counted inside it");
  t.equal(r.refusalsUnlogged, 3);
  t.same(r.refusalSummary.map((x) => `${x.kind} ${x.code} ${x.count}`), ["scp UNLOGGED 3"]);
});

t.test("the table: every event the sources write is a refusal or known not to be one", async (t) => {
  const names = new Set<string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts")) for (const m of fs.readFileSync(p, "utf8").matchAll(/\.event\(\s*(?:how === "same" \? )?"([a-z-]+)"(?: : "([a-z-]+)")?/g)) [m[1], m[2]].forEach((n) => n && names.add(n));
    }
  };
  walk(path.join(TOP, "src"));
  t.ok(names.size > 20, `found ${names.size} event names`);
  for (const n of names) t.ok(Object.hasOwn(REFUSAL_EVENTS, n) || KNOWN_EVENTS.includes(n), `event '${n}' is classified in src/audit/refusals.ts`);
  t.equal(refusalOf({ event: "upload-refused", decision: "deny" }), "upload");
  t.equal(refusalOf({ event: "request", decision: "allow" }), undefined);
  t.equal(refusalOf({ event: "refused", protocol: "scp" }), "scp");
  t.equal(refusalOf({ event: "rsync-exit", exit: 23, code: "QUOTA" }), "rsync push");
  t.equal(refusalOf({ event: "rsync-exit", exit: 23, unstored: 2 }), undefined, "its skips are counted one by one");
  t.equal(refusalOf({ event: "something-new", decision: "deny" }), "other", "an unknown deny still counts");
});
