// A per-session budget for every line a client can cause (issue 18, item 2): whatever a client
// sends, one session writes at most 2,000 lines and 1 MiB of log, says once where a kind's lines
// stop, and session-end counts what was not written, per kind. What records a stored file is never
// dropped. Command denials, one session each, are held per key and minute across sessions.
// Through the real binary; the figures are printed as comments.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { sandbox, auditLines, runGate, gateIds, snapshotAll, TOP, type Sandbox, type AuditLine } from "./helpers/env.js";
import { gate, kinds } from "./helpers/scp-wire.js";
import { SftpClient, FX, PF } from "./helpers/sftp-client.js";
import { Budget, KINDS } from "../src/audit/budget.js";
import { DENIALS_PER_MINUTE } from "../src/audit/denials.js";

t.setTimeout(10 * 60_000);

const MiB = 1024 * 1024;

function logSize(sb: Sandbox): { lines: number; bytes: number } {
  const raw = fs.readFileSync(sb.audit);
  return { lines: raw.toString("latin1").split("\n").length - 1, bytes: raw.length };
}

function growth(t: Test, sb: Sandbox, before: { lines: number; bytes: number }, what: string): void {
  const after = logSize(sb);
  const lines = after.lines - before.lines;
  const bytes = after.bytes - before.bytes;
  t.comment(`${what}: the log grew by ${lines} lines, ${bytes} bytes`);
  t.ok(lines <= 2000, `at most 2,000 lines (${lines})`);
  t.ok(bytes <= MiB, `at most 1 MiB (${bytes} bytes)`);
}

const end = (sb: Sandbox): AuditLine => auditLines(sb).filter((l) => l.event === "session-end").at(-1)!;

t.test("scp -t fed '\\x01\\n' a million times: 150 client-error lines, one notice, the rest counted", async (t) => {
  const sb = sandbox(t);
  const before = logSize(sb);
  const files = snapshotAll(sb);
  const input = Buffer.alloc(2 * 1_000_000, "\x01\n");
  const started = Date.now();
  const r = await gate(sb, "scp -t .", input);
  t.comment(`2 MB of input handled in ${Date.now() - started} ms (noisy)`);
  t.equal(r.code, 1, "warnings: exit 1");
  t.equal(kinds(r.stdout), "ok", "the sink's ready byte and nothing else");
  growth(t, sb, before, "1,000,000 client warnings");
  t.same(snapshotAll(sb), files, "nothing stored or changed, inside the root or outside");
  const lines = auditLines(sb);
  t.equal(lines.filter((l) => l.event === "client-error").length, KINDS["client-error"].lines, "client-error lines up to the budget");
  t.match(
    lines.filter((l) => l.event === "budget"),
    [{ kind: "client-error", anomaly: true, reason: /further client-error lines are not written/ }],
    "one line says where they stop",
  );
  t.match(end(sb), { notWritten: { "client-error": 1_000_000 - KINDS["client-error"].lines }, lines: { "client-error": KINDS["client-error"].lines } }, "session-end counts what was not written");
});

t.test("an SFTP flood of reads and refused requests with long names: within 2,000 lines and 1 MiB; a publish after it is logged", async (t) => {
  // Names as long as paths get (four components of 240 bytes): a refusal line is then over 2 KiB.
  const long = Array.from({ length: 4 }, (_, i) => `${String(i)}${"x".repeat(239)}`).join("/") + ".gpg";
  const sb = sandbox(t, { files: { "existing.gpg": "old\n", [long]: "long\n" } });
  const before = logSize(sb);
  const files = snapshotAll(sb);
  const c = SftpClient.gate(sb);
  t.teardown(() => void c.kill());
  await c.init();
  const READS = 3000;
  for (let i = 0; i < READS; i += 50) {
    const handles = await Promise.all(Array.from({ length: 50 }, () => c.openHandle("existing.gpg", PF.READ))); // within maxOpenHandles
    await Promise.all(handles.map((h) => c.close(h)));
  }
  const REFUSED = 20_000;
  for (let i = 0; i < REFUSED; i += 1000) {
    const replies = await Promise.all(Array.from({ length: 1000 }, (_, k) => c.remove(k % 2 ? long : "existing.gpg")));
    t.ok(
      replies.every((r) => r.status?.code === FX.PERMISSION_DENIED),
      "every REMOVE refused",
    );
  }
  t.equal((await c.put("after-flood.gpg", "stored after the flood\n")).status?.code, FX.OK, "an upload after the flood is stored");
  t.equal((await c.end()).code, 0);
  growth(t, sb, before, `${READS} reads and ${REFUSED} refusals`);
  const lines = auditLines(sb);
  t.match(lines.find((l) => l.event === "publish" && l.path === "after-flood.gpg"), { sha256: /^[0-9a-f]{64}$/ }, "its publish line is there");
  const e = end(sb);
  const notWritten = e.notWritten as Record<string, number>;
  const written = e.lines as Record<string, number>;
  t.comment(`session-end: lines ${JSON.stringify(written)}, notWritten ${JSON.stringify(notWritten)}`);
  t.equal((written.read ?? 0) + (notWritten.read ?? 0), READS, "every read written or counted");
  t.equal((written.refusal ?? 0) + (notWritten.refusal ?? 0), REFUSED, "every refusal written or counted");
  t.equal(lines.filter((l) => l.event === "read").length, written.read, "session-end's count of read lines is true");
  t.equal(e.refused, REFUSED, "counters.refused still counts them all");
  t.equal(lines.filter((l) => l.event === "budget").length, 2, "one notice per kind that ran out");
  t.ok(fs.readFileSync(path.join(sb.root, "existing.gpg"), "utf8") === "old\n", "nothing stored changed");
  const after = snapshotAll(sb);
  delete after["root/after-flood.gpg"];
  t.same(after, files, "nothing else stored, changed or removed, inside the root or outside");
});

t.test("Budget: what records a stored file is never dropped; past its limit the act is to be refused", async (t) => {
  const b = new Budget();
  let dropped = 0;
  for (let i = 0; i < KINDS.rename.lines; i++) {
    if (b.judge("rename") !== "write") dropped++;
    b.wrote("rename", 100);
  }
  t.equal(dropped, 0, `${KINDS.rename.lines} rename lines written`);
  t.equal(b.judge("rename"), "write", "a rename line is never dropped");
  t.notOk(b.room("rename"), "but there is no room for another rename: the vault refuses it");
  t.ok(b.room("publish"), "the store kind has its own room");
  t.ok(b.room("session-end") && b.judge("session-end") === "write", "unbudgeted events are always written");
  for (let i = 0; i < KINDS.read.lines; i++) b.wrote("read", 100);
  t.equal(b.judge("read"), "announce", "the first read past the limit: dropped, and announced");
  t.equal(b.judge("download"), "drop", "then dropped quietly (download is a read)");
  t.same(b.counts().notWritten, { read: 2 });
});

/** The sandbox's state/locks made before the gate's first run, as the gate makes it: 0700, the gate user's. */
function gateLocks(sb: Sandbox): string {
  const { uid, gid } = gateIds();
  const locks = path.join(sb.state, "locks");
  fs.mkdirSync(locks, { recursive: true, mode: 0o700 });
  fs.chownSync(locks, uid, gid);
  return locks;
}

t.test("command denials: 30 per key and minute across sessions, then counted; the next one written says how many were not", async (t) => {
  const sb = sandbox(t);
  const { uid, gid } = gateIds();
  const locks = gateLocks(sb);
  const record = path.join(locks, "denials");
  const setRecord = (r: object) => {
    fs.writeFileSync(record, JSON.stringify(r));
    fs.chownSync(record, uid, gid);
  };
  // 29 denials already in this window (the record as the gate keeps it; time is not slept here).
  setRecord({ since: Date.now(), count: DENIALS_PER_MINUTE - 1, carried: 0 });
  const files = snapshotAll(sb);
  for (let i = 0; i < 3; i++) {
    const r = await runGate(sb, "rm -rf /", { timeoutMs: 120_000 });
    t.equal(r.code, 1, "refused");
    t.match(r.stderr, /not allowed|refused|unknown/i, "the client is told, written or not");
  }
  let denied = auditLines(sb).filter((l) => l.decision === "deny");
  t.equal(denied.length, 1, "the 30th is written, the 31st and 32nd are not");
  t.match(denied[0], { anomaly: true, note: /30 denied commands of this key within a minute/ });
  // The window is over (its start moved back, as a minute passing would): the next one is written
  // and says how many were not.
  setRecord({ ...(JSON.parse(fs.readFileSync(record, "utf8")) as object), since: Date.now() - 61_000 });
  const r = await runGate(sb, "rm -rf /", { timeoutMs: 120_000 });
  t.equal(r.code, 1);
  denied = auditLines(sb).filter((l) => l.decision === "deny");
  t.equal(denied.length, 2);
  t.match(denied[1], { notWrittenBefore: 2 }, "2 denials were not written");
  t.same(snapshotAll(sb), files, "no denied command changed anything, inside the root or outside");
  const review = spawnSync(process.execPath, [path.join(TOP, "dist/app/cli.js"), "audit", "--file", sb.audit, "--json"], { encoding: "utf8" });
  t.match(JSON.parse(review.stdout), { keys: [{ label: "test", denied: 4 }] }, "the review counts the 4 denials of this test, 2 of them unwritten");
});

t.test("a flood of denied commands that stops: those only counted reach the log with the key's next line after the minute", async (t) => {
  const sb = sandbox(t);
  const record = path.join(sb.state, "locks", "denials");
  const files = snapshotAll(sb);
  const FLOOD = DENIALS_PER_MINUTE + 3;
  const started = Date.now();
  for (let i = 0; i < FLOOD; i++) {
    const r = await runGate(sb, "rm -rf /", { timeoutMs: 120_000 });
    t.equal(r.code, 1, "refused");
  }
  t.comment(`${FLOOD} denied commands in ${Date.now() - started} ms (noisy)`);
  // The whole flood must have fallen in one window for the counts below; it takes seconds, not a minute.
  t.ok(Date.now() - started < 60_000, "the flood took less than the window");
  t.equal(auditLines(sb).filter((l) => l.decision === "deny").length, DENIALS_PER_MINUTE, "30 written, 3 only counted");
  // The client stops. The minute passes (the window's start moved back: time is not slept).
  const r0 = JSON.parse(fs.readFileSync(record, "utf8")) as { since: number };
  fs.writeFileSync(record, JSON.stringify({ ...r0, since: Date.now() - 61_000 }));
  // The key's next session is allowed: its first line brings the count.
  const ok = await runGate(sb, "true", { timeoutMs: 120_000 });
  t.equal(ok.code, 0, "an allowed session");
  const allow = auditLines(sb).filter((l) => l.event === "request" && l.decision === "allow");
  t.equal(allow.length, 1);
  t.match(allow[0], { notWrittenBefore: 3 }, "the allowed session's request line says 3 denials were not written");
  // Once only: the session after it brings nothing.
  t.equal((await runGate(sb, "true", { timeoutMs: 120_000 })).code, 0);
  t.notOk("notWrittenBefore" in auditLines(sb).filter((l) => l.event === "request").at(-1)!, "reported once");
  t.same(snapshotAll(sb), files, "no session changed anything, inside the root or outside");
  const review = spawnSync(process.execPath, [path.join(TOP, "dist/app/cli.js"), "audit", "--file", sb.audit, "--json"], { encoding: "utf8" });
  t.match(JSON.parse(review.stdout), { keys: [{ label: "test", denied: FLOOD, sessions: DENIALS_PER_MINUTE + 2 }] }, `the review counts all ${FLOOD} denials`);
});

t.test("the denial record cannot be replaced (its rename fails): the denial is written, and no denials.<pid> is left", async (t) => {
  const sb = sandbox(t);
  const locks = gateLocks(sb);
  // A directory, not empty, where the record goes: rename(2) of a file onto it fails (EISDIR).
  fs.mkdirSync(path.join(locks, "denials", "x"), { recursive: true });
  const files = snapshotAll(sb);
  for (let i = 0; i < 2; i++) {
    const r = await runGate(sb, "rm -rf /", { timeoutMs: 120_000 });
    t.equal(r.code, 1, "refused");
  }
  t.equal(auditLines(sb).filter((l) => l.decision === "deny").length, 2, "both denials written (trouble with the record errs on writing)");
  const left = fs.readdirSync(locks).filter((n) => n.startsWith("denials."));
  t.same(left, [], `no temporary record left: ${JSON.stringify(left)}`);
  t.same(snapshotAll(sb), files, "no denied command changed anything, inside the root or outside");
});
