// `audit --rotate` (issue 17, item 7): the log moves to LOG.1, sealed root-owned; the new log's first
// line links to LOG.1's last, so `audit --verify` checks the chain across both files; a session that
// opened the log before the rotation writes on in the new one, never into LOG.1.
import t from "tap";
import fs from "node:fs";
import { execFileSync } from "node:child_process";
import { sandbox, runGate, gateIds } from "./helpers/env.js";
import { SftpClient } from "./helpers/sftp-client.js";
import { runRoot } from "./helpers/duplicity.js";
import { lineHash, CHAIN_START } from "../src/audit/chain.js";

const lines = (f: string) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean);

t.test("rotate keeps the chain verifiable across files and the rotated file sealed", async (t) => {
  const sb = sandbox(t, { files: { "existing.gpg": "old\n" } });
  const { uid, gid } = gateIds();
  await runGate(sb, "true");
  await runGate(sb, "bash -c id");
  t.equal((await runRoot(sb, ["audit", "--record-head"])).code, 0);
  // A session open across the rotation.
  const sftp = SftpClient.gate(sb);
  await sftp.init();
  const before = lines(sb.audit);

  const r = await runRoot(sb, ["audit", "--rotate"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.toString(), /rotated .*audit\.log to .*audit\.log\.1 \(\d+ lines, sealed root-owned 0440\)/);
  const rotated = `${sb.audit}.1`;
  t.same(lines(rotated), before, "the old lines, as they were, in .1");
  const st = fs.statSync(rotated);
  t.match({ uid: st.uid, mode: st.mode & 0o777 }, { uid: 0, mode: 0o440 }, ".1 is root's, read-only");
  const fresh = fs.statSync(sb.audit);
  t.match({ uid: fresh.uid, gid: fresh.gid }, { uid, gid }, "the new log has the old one's owner");
  const first = JSON.parse(lines(sb.audit)[0]!) as Record<string, unknown>;
  t.match(first, { event: "rotate", client: "root", prev: lineHash(Buffer.from(before.at(-1)!)) }, "line 1 links to .1's last line");
  t.not(first.prev, CHAIN_START);

  await sftp.remove("existing.gpg"); // refused, and logged: in the new file
  await sftp.end();
  t.same(lines(rotated), before, "the session opened before the rotation did not write into .1");
  t.ok(lines(sb.audit).some((l) => JSON.parse(l).event === "refused"), "it wrote into the new log");
  await runGate(sb, "true");

  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  t.match(v.stdout.toString(), /audit log .*audit\.log\.1: \d+ lines, its last line is where .*audit\.log goes on\n.*\naudit --verify: OK/);
  const review = await runRoot(sb, ["audit", "--json"]);
  t.match(JSON.parse(review.stdout.toString()).files, [{ chain: /^intact/ }], "the review's chain check goes across the files too");

  // Rotate again: .1 moves to .2, the chain goes on.
  t.equal((await runRoot(sb, ["audit", "--rotate"])).code, 0);
  t.ok(fs.existsSync(`${sb.audit}.2`), ".1 became .2");
  t.equal((await runRoot(sb, ["audit", "--verify"])).code, 0, "verify OK after the second rotation");

  // The last line of .1 removed: the new log no longer goes on from it.
  const now1 = lines(rotated);
  fs.writeFileSync(rotated, now1.slice(0, -1).map((l) => l + "\n").join(""));
  const bad = await runRoot(sb, ["audit", "--verify"]);
  t.equal(bad.code, 1, "a truncated .1 is found");
  t.match(bad.stdout.toString(), /does not go on from the last line of .*audit\.log\.1/);
  // .1 gone altogether.
  fs.rmSync(rotated);
  const gone = await runRoot(sb, ["audit", "--verify"]);
  t.equal(gone.code, 1);
  t.match(gone.stdout.toString(), /goes on from a rotated log, but .*audit\.log\.1 is missing/);
});

t.test("an append-only log (chattr +a) stays append-only, and so does .1", async (t) => {
  const sb = sandbox(t);
  const attrs = (f: string) => execFileSync("lsattr", ["-d", f], { encoding: "utf8" }).split(/\s/)[0]!;
  const files = () => [sb.audit, `${sb.audit}.1`, `${sb.audit}.2`].filter((f) => fs.existsSync(f));
  try {
    execFileSync("chattr", ["+a", sb.audit]);
  } catch {
    t.pass("skipped: this filesystem has no append-only attribute");
    return;
  }
  try {
    await runGate(sb, "true");
    t.equal((await runRoot(sb, ["audit", "--rotate"])).code, 0);
    await runGate(sb, "true");
    const r = await runRoot(sb, ["audit", "--rotate"]);
    t.equal(r.code, 0, r.stderr);
    for (const f of files()) t.match(attrs(f), /a/, `${f.slice(sb.dir.length)} is append-only`);
    await runGate(sb, "true");
    t.equal((await runRoot(sb, ["audit", "--verify"])).code, 0, "the chain holds");
  } finally {
    for (const f of files()) execFileSync("chattr", ["-a", f]);
  }
});

t.test("--rotate needs one --config", async (t) => {
  const sb = sandbox(t);
  const { run, BIN } = await import("./helpers/env.js");
  const r = await run([BIN, "audit", "--rotate", "--file", sb.audit], { env: { PATH: "/usr/bin:/bin" } });
  t.equal(r.code, 2);
  t.match(r.stderr, /--rotate goes with one --config F/);
});

t.test("one rotation at a time: a second --rotate while one runs moves nothing", async (t) => {
  const sb = sandbox(t, {});
  await runGate(sb, "true");
  const lock = `${sb.state}/locks/rotate.lock`;
  fs.symlinkSync(`${process.pid} ?`, lock); // held by a live process: this test's
  const before = fs.readFileSync(sb.audit);
  const busy = await runRoot(sb, ["audit", "--rotate"]);
  t.equal(busy.code, 4, busy.stderr);
  t.match(busy.stderr, /another audit --rotate of .* is running .*nothing was moved/);
  t.same(fs.readFileSync(sb.audit), before, "the log is as it was");
  t.notOk(fs.existsSync(`${sb.audit}.1`), "no rotated file");
  fs.unlinkSync(lock);
  t.equal((await runRoot(sb, ["audit", "--rotate"])).code, 0, "once it is free, the rotation runs");
  t.ok(fs.existsSync(`${sb.audit}.1`));
});
