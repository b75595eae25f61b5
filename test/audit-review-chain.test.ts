// The audit log's hash chain: concurrent sessions keep it linear; editing, deleting or reordering
// a line in the middle, and truncating the tail after a recorded head, are caught by --verify.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { BIN, run, sandbox, runGate, type Sandbox } from "./helpers/env.js";
import { openAudit } from "../src/audit/log.js";
import { verifyLog, recordHead, lineHash, CHAIN_START } from "../src/audit/chain.js";

const auditCmd = (args: string[]) => run([BIN, "audit", ...args], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
const lines = (f: string) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean);
const write = (f: string, ls: string[]) => fs.writeFileSync(f, ls.map((l) => l + "\n").join(""));

/** A log written by real sessions, several at once. */
async function sessionLog(t: Parameters<typeof sandbox>[0]): Promise<Sandbox> {
  const sb = sandbox(t);
  await Promise.all([...Array(6)].map((_, i) => runGate(sb, i % 2 ? "true" : "bash -c id")));
  return sb;
}

t.test("sessions chain their lines; every kind of edit breaks the chain", async (t) => {
  const sb = await sessionLog(t);
  const log = sb.audit;
  const original = lines(log);
  const n = original.length;
  t.equal(n, 9, "3 allowed sessions of 2 lines, 3 refusals of 1");
  t.equal(JSON.parse(original[0]!).prev, CHAIN_START, "the first line chains to the empty string");
  for (let i = 1; i < original.length; i++) t.equal(JSON.parse(original[i]!).prev, lineHash(Buffer.from(original[i - 1]!)), `line ${i + 1}`);
  const clean = await verifyLog(log);
  t.same(clean.problems, []);
  t.equal(clean.lines, n);

  const copy = path.join(sb.dir, "copy.log");
  const check = async (ls: string[]) => {
    write(copy, ls);
    return (await verifyLog(copy)).problems;
  };
  const edited = [...original];
  edited[5] = edited[5]!.replace('"event":"', '"event":"x');
  t.match(await check(edited), [{ line: 7, what: /line 7 does not chain to line 6: line 6 was changed/ }], "an edited line");
  t.match(await check(original.filter((_, i) => i !== 5)), [{ line: 6, what: /line 6 does not chain to line 5/ }], "a deleted line");
  const swapped = [...original];
  [swapped[5], swapped[6]] = [swapped[6]!, swapped[5]!];
  const reorder = await check(swapped);
  t.ok(reorder.length >= 1 && reorder.every((p) => /reordered/.test(p.what)), `reordered lines: ${JSON.stringify(reorder)}`);
  t.match(await check(original.slice(3)), [{ line: 1, what: /lines before it were removed/ }], "the head of the file cut off");
  t.same(await check(original.slice(0, n - 2)), [], "a truncated tail is invisible to the chain alone...");

  // ...which is what the recorded head is for.
  const { head } = await recordHead(log);
  t.equal(head.lines, n);
  t.equal(fs.statSync(`${log}.head`).mode & 0o777, 0o600, "the head file is root's alone");
  const ok = await auditCmd(["--verify", "--file", log]);
  t.equal(ok.code, 0, ok.stdout.toString());
  t.match(ok.stdout.toString(), new RegExp(`${n} lines, .* 1 recorded head\\(s\\) checked.*\\naudit --verify: OK\\n$`, "s"));
  await runGate(sb, "true");
  t.same((await verifyLog(log)).problems, [], "lines appended after the head are fine");
  const now = lines(log);
  write(log, now.slice(0, n - 2)); // same inode: truncated in place
  const cut = await auditCmd(["--verify", "--file", log]);
  t.equal(cut.code, 1);
  t.match(cut.stdout.toString(), new RegExp(`the log has ${n - 2} lines, but ${n} were recorded at .*: its tail was truncated or rewritten`));
  write(log, [...now.slice(0, n - 1), now[n - 1]!.replace('"event":"', '"event":"x'), ...now.slice(n)]);
  const rewritten = await auditCmd(["--verify", "--file", log]);
  t.equal(rewritten.code, 1);
  t.match(rewritten.stdout.toString(), new RegExp(`line ${n} differs from the head recorded at`));
  fs.renameSync(log, `${log}.1`);
  write(log, now);
  const replaced = await auditCmd(["--verify", "--file", log]);
  t.equal(replaced.code, 1);
  t.match(replaced.stdout.toString(), /is not the file whose head was recorded .*replaced or rotated/);
});

t.test("a torn last line does not swallow the next one; an unchained prefix is only a note", async (t) => {
  const sb = sandbox(t);
  fs.writeFileSync(sb.audit, '{"event":"from an older version"}\n{"event":"torn');
  const audit = openAudit(sb.audit, path.join(sb.dir, "lock"), { label: "x" });
  audit.event("after");
  audit.event("again");
  const ls = lines(sb.audit);
  t.equal(ls.length, 4);
  t.match(JSON.parse(ls[2]!), { event: "after", prev: lineHash(Buffer.from('{"event":"torn')) });
  const r = await verifyLog(sb.audit);
  t.match(r.notes, [/no recorded head/, /lines 1-2 carry no chain/]);
  t.match(r.problems, [{ line: 2, what: /not a JSON object/ }]);
});

t.test("usage errors", async (t) => {
  const r = await auditCmd(["--verify"]);
  t.equal(r.code, 2);
  t.match(r.stderr, /which log\? give --file LOG or --config F/);
  const bad = await auditCmd(["--file", "/nonexistent.log", "--since", "yesterday"]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--since: 'yesterday' is neither a date nor an age/);
});
