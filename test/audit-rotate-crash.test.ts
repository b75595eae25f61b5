// `audit --rotate` when things go wrong: a failing `chattr +a` must not hide why the move failed, and
// a run killed between the link(2) and the unlink(2) of a move (one log file under two names) must
// neither make `audit --verify` cry tampering nor have the next rotation archive the same file twice.
// The faults are made for real, in the real binary, by strace's syscall injection: an error where
// the kernel would give one, a SIGKILL at the very unlink(2) (which then never runs).
import t, { type Test } from "tap";
import fs from "node:fs";
import { execFileSync } from "node:child_process";
import { sandbox, runGate, run, BIN, type Sandbox } from "./helpers/env.js";
import { runRoot } from "./helpers/duplicity.js";

const STRACE = "/usr/bin/strace";
const lines = (f: string) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean);
const ino = (f: string) => fs.statSync(f).ino;
const exists = (f: string) => fs.existsSync(f);

/** `audit --rotate` of the sandbox's key under strace with these options (tracing only the main thread). */
function rotateUnder(sb: Sandbox, strace: string[]) {
  return run([STRACE, "-qq", "-o", "/dev/null", ...strace, BIN, "audit", "--rotate", "--config", sb.config], { env: { PATH: "/usr/bin:/bin" } });
}

/** A run killed at the unlink(2) of `name`, its link(2) done: the state a crash there leaves. */
async function killedAtUnlink(t: Test, sb: Sandbox, name: string): Promise<void> {
  const r = await rotateUnder(sb, ["-P", name, "-e", "trace=unlink,unlinkat", "-e", "inject=unlink,unlinkat:error=EIO:signal=KILL"]);
  t.not(r.code, 0, "the run was killed");
  t.ok(exists(name), `${JSON.stringify(name.slice(sb.dir.length))} was not unlinked`);
}

function noStrace(t: Test): boolean {
  if (exists(STRACE)) return false;
  t.plan(0, `needs ${STRACE} to inject the fault`);
  return true;
}

/** A log rotated once, with a line since: LOG.1 (its lines: `older`) and LOG. */
async function rotatedOnce(t: Test): Promise<{ sb: Sandbox; older: string[] }> {
  const sb = sandbox(t);
  await runGate(sb, "true");
  t.equal((await runRoot(sb, ["audit", "--rotate"])).code, 0);
  await runGate(sb, "true");
  return { sb, older: lines(`${sb.audit}.1`) };
}

/** What the next rotation must make of a log rotated once (.1: `older`), `now` its lines. */
async function rotatesOnce(t: Test, sb: Sandbox, now: string[], older: string[]): Promise<string> {
  const r = await runRoot(sb, ["audit", "--rotate"]);
  t.equal(r.code, 0, r.stderr);
  t.same(lines(`${sb.audit}.1`), now, ".1: the log as it was, every line once");
  t.same(lines(`${sb.audit}.2`), older, ".2: the earlier rotated log");
  t.notOk(exists(`${sb.audit}.3`), "no third file: nothing is archived twice");
  t.not(ino(`${sb.audit}.1`), ino(`${sb.audit}.2`), ".1 and .2 are different files");
  t.not(ino(sb.audit), ino(`${sb.audit}.1`), "the log is a new file");
  t.equal((await runRoot(sb, ["audit", "--verify"])).code, 0, "verify OK after the repair");
  return r.stdout.toString();
}

t.test("a failing chattr +a after a failed move: both errors reach the admin, the real one first", async (t) => {
  if (noStrace(t)) return;
  const { sb } = await rotatedOnce(t);
  const one = `${sb.audit}.1`;
  execFileSync("chattr", ["+a", one]);
  t.teardown(() => {
    for (const f of [sb.audit, one, `${sb.audit}.2`]) if (exists(f)) execFileSync("chattr", ["-a", f]);
  });
  const before = { log: fs.readFileSync(sb.audit), one: fs.readFileSync(one) };
  // The main thread's first link(2) is the shift of .1 to .2: it fails (EIO). Its third child is the
  // chattr +a that puts .1's flag back (lsattr, chattr -a, chattr +a): it cannot be started (ENOMEM).
  const r = await rotateUnder(sb, ["-e", "trace=link,linkat,clone", "-e", "inject=link,linkat:error=EIO:when=1", "-e", "inject=clone:error=ENOMEM:when=3"]);
  t.equal(r.code, 4, r.stderr);
  const err = r.stderr;
  const link = err.search(/i\/o error, link .*audit\.log\.1' -> .*audit\.log\.2'/);
  const chattr = err.search(/chattr \+a \S*audit\.log\.1 failed/);
  t.ok(link >= 0, `the move's own error is said: ${JSON.stringify(err)}`);
  t.ok(chattr > link, `the chattr failure is said too, after it: ${JSON.stringify(err)}`);
  t.match(err, /put the flag back: chattr \+a \S*audit\.log\.1/, "and how to repair what it left");
  t.same(fs.readFileSync(sb.audit), before.log, "the log is as it was");
  t.same(fs.readFileSync(one), before.one, ".1 is as it was");
  t.notOk(exists(`${sb.audit}.2`), "nothing was moved");
});

t.test("a rotation killed between the link and the unlink of the log: verify passes, the next rotation finishes it", async (t) => {
  if (noStrace(t)) return;
  const { sb, older } = await rotatedOnce(t);
  t.equal((await runRoot(sb, ["audit", "--record-head"])).code, 0);

  await killedAtUnlink(t, sb, sb.audit);
  t.equal(ino(sb.audit), ino(`${sb.audit}.1`), "the log and .1 are one file under two names");
  t.same(lines(`${sb.audit}.2`), older, "the earlier .1 had moved to .2");
  await runGate(sb, "true"); // sessions go on writing in the log (the same file as .1)
  const now = lines(sb.audit);

  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  t.match(v.stdout.toString(), /audit log .*audit\.log\.2: \d+ lines, its last line is where .*audit\.log goes on/, "the chain is checked against .2, the file the log goes on from");
  t.match(v.stdout.toString(), /note: .*audit\.log\.1 is .*audit\.log itself under a second name.*audit --rotate/);
  const review = await runRoot(sb, ["audit", "--json"]);
  t.match(JSON.parse(review.stdout.toString()).files, [{ chain: /^intact/, lines: now.length }], "the review counts each line once");
  // status reads the last rotated log, then the log: .1 is the log itself here, read once.
  await runGate(sb, "rm x");
  const status = await runRoot(sb, ["status", "--json"]);
  t.match(JSON.parse(status.stdout.toString()).keys, [{ refusals24h: 1 }], "status counts the one refusal once");
  // verify --stored replays each log once: .1, the log under a second name, is not read again.
  const stored = await runRoot(sb, ["verify", "--stored"]);
  t.equal(stored.code, 0, stored.stdout.toString() + stored.stderr.toString());
  t.match(stored.stdout.toString(), `audit logs: ${sb.audit}.2, ${sb.audit}\n`, "verify --stored reads .2 and the log, not .1 again");

  t.match(await rotatesOnce(t, sb, lines(sb.audit), older), /interrupted audit --rotate had left/, "the admin is told what was repaired");
});

t.test("a rotation killed between the link and the unlink of a shift: the next one archives each file once", async (t) => {
  if (noStrace(t)) return;
  const { sb, older } = await rotatedOnce(t);
  await killedAtUnlink(t, sb, `${sb.audit}.1`);
  t.equal(ino(`${sb.audit}.1`), ino(`${sb.audit}.2`), ".1 and .2 are one file under two names");
  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  const now = lines(sb.audit);

  t.match(await rotatesOnce(t, sb, now, older), /interrupted audit --rotate had left .*audit\.log\.2 also named .*audit\.log\.1/);
});

t.test("the repair done, its rotation failed (disk full): verify passes the gap, the run after that rotates", async (t) => {
  if (noStrace(t)) return;
  const { sb, older } = await rotatedOnce(t);
  await killedAtUnlink(t, sb, sb.audit);
  const now = lines(sb.audit);

  // The new log cannot be made: the run stops after it removed the name .1 the killed one left.
  const r = await rotateUnder(sb, ["-P", `${sb.audit}.rotating`, "-e", "trace=openat", "-e", "inject=openat:error=ENOSPC"]);
  t.equal(r.code, 4, r.stderr);
  t.match(r.stderr, /no space left on device/);
  t.match(r.stdout.toString(), /interrupted audit --rotate had left .*audit\.log also named .*audit\.log\.1: that name was removed/, "the repair is said although the rotation failed");
  t.notOk(exists(`${sb.audit}.1`), "the second name is gone");
  t.same(lines(sb.audit), now, "the log is untouched");

  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  t.match(v.stdout.toString(), /note: .*audit\.log\.1 is missing but .*audit\.log\.2 is there/);
  await rotatesOnce(t, sb, now, older);
});

t.test("the audit lock cannot be taken (a holder's lock from the future: a clock set back): nothing moves, exit 4", async (t) => {
  const { sb } = await rotatedOnce(t);
  const lock = `${sb.state}/locks/audit.lock`;
  // Held by a live process (ours), made an hour from now: never old enough to be broken.
  fs.symlinkSync(`${process.pid} ${fs.readFileSync(`/proc/${process.pid}/stat`, "latin1").split(") ")[1]!.split(" ")[19]}`, lock);
  const future = new Date(Date.now() + 3600_000);
  fs.lutimesSync(lock, future, future);
  t.teardown(() => fs.rmSync(lock, { force: true }));
  const before = { log: fs.readFileSync(sb.audit), one: fs.readFileSync(`${sb.audit}.1`) };
  const r = await runRoot(sb, ["audit", "--rotate"]);
  t.equal(r.code, 4, "refused, not rotated without the lock");
  t.match(r.stderr, /audit\.lock could not be taken/);
  t.match(r.stderr, /already moved one number up .*audit --verify accepts this, and the next audit --rotate finishes it/, "what was moved is said");
  t.same(fs.readFileSync(sb.audit), before.log, "the log is as it was");
  t.same(fs.readFileSync(`${sb.audit}.2`), before.one, "the rotated log moved up one number, whole");
  t.notOk(exists(`${sb.audit}.1`) || exists(`${sb.audit}.rotating`), "nothing else moved, nothing left");
  fs.rmSync(lock);
  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  await rotatesOnce(t, sb, lines(sb.audit), lines(`${sb.audit}.2`));
});

t.test("the new log cannot take the log's name (rename fails): the log is moved back, nothing lost", async (t) => {
  if (noStrace(t)) return;
  const { sb, older } = await rotatedOnce(t);
  const before = fs.readFileSync(sb.audit);
  const r = await rotateUnder(sb, ["-e", "trace=rename,renameat,renameat2", "-e", "inject=rename,renameat,renameat2:error=EIO"]);
  t.equal(r.code, 4, r.stderr);
  t.match(r.stderr, /i\/o error, rename .*audit\.log\.rotating/, "the rename's own error is said");
  t.same(fs.readFileSync(sb.audit), before, "the log is back under its name, as it was");
  t.notOk(exists(`${sb.audit}.1`) || exists(`${sb.audit}.rotating`), "no second name, no new log left");
  t.same(lines(`${sb.audit}.2`), older, "the earlier rotated log moved up one number, whole");
  await runGate(sb, "true"); // a session writes on in the same chain
  const v = await runRoot(sb, ["audit", "--verify"]);
  t.equal(v.code, 0, v.stdout.toString());
  await rotatesOnce(t, sb, lines(sb.audit), older);
});

t.test("a rotated log that is a symbolic link to another: verify --stored does not take it for that file, it refuses to read it", async (t) => {
  const { sb } = await rotatedOnce(t);
  fs.symlinkSync(`${sb.audit}.1`, `${sb.audit}.2`);
  const before = { one: fs.readFileSync(`${sb.audit}.1`), log: fs.readFileSync(sb.audit) };
  const v = await runRoot(sb, ["verify", "--stored"]);
  t.equal(v.code, 1, "verify --stored fails: it did not judge the link");
  t.match(v.stderr.toString(), /not read: \S+audit\.log\.2 \(a symbolic link/, "and names it");
  t.same(fs.readFileSync(`${sb.audit}.1`), before.one, "the rotated log is untouched");
  const log = fs.readFileSync(sb.audit);
  t.same(log.subarray(0, before.log.length), before.log, "the log only grew");
  t.match(
    log.subarray(before.log.length).toString().split("\n").filter(Boolean).map((l) => JSON.parse(l) as unknown),
    [{ event: "verify-stored", ok: false, unreadable: 1 }],
    "by the check's own line, not ok",
  );
  t.ok(fs.lstatSync(`${sb.audit}.2`).isSymbolicLink(), "the link is left as it was");
});

t.test("LOG.1 a symbolic link to the log: audit --verify does not take it for an interrupted rotation", async (t) => {
  const { sb } = await rotatedOnce(t);
  t.equal((await runRoot(sb, ["audit", "--rotate"])).code, 0); // .1 and .2 now both rotated logs
  fs.rmSync(`${sb.audit}.1`);
  fs.symlinkSync(sb.audit, `${sb.audit}.1`);
  const before = fs.readFileSync(sb.audit);
  const v = await runRoot(sb, ["audit", "--verify"]);
  const said = v.stdout.toString() + v.stderr.toString();
  t.not(v.code, 0, "verify fails");
  t.notMatch(said, /itself under a second name/, "no note of an interrupted rotation: a link is no second name");
  t.match(said, /audit\.log\.1/, `and names .1: ${JSON.stringify(said.slice(0, 400))}`);
  t.same(fs.readFileSync(sb.audit), before, "the log is untouched");
  t.ok(fs.lstatSync(`${sb.audit}.1`).isSymbolicLink(), "the link is left as it was");
});

t.test("a rotation killed with a flag lifted: the next one puts chattr +a back on every log, not only where it finds it", async (t) => {
  if (noStrace(t)) return;
  const { sb } = await rotatedOnce(t);
  const attrs = (f: string) => execFileSync("lsattr", ["-d", f], { encoding: "utf8" }).split(/\s/)[0]!;
  const logs = () => [sb.audit, `${sb.audit}.1`, `${sb.audit}.2`, `${sb.audit}.3`].filter(exists);
  try {
    execFileSync("chattr", ["+a", sb.audit, `${sb.audit}.1`]);
  } catch {
    t.pass("skipped: this filesystem has no append-only attribute");
    return;
  }
  t.teardown(() => {
    for (const f of logs()) execFileSync("chattr", ["-a", f]);
  });
  // The first link(2) is the shift of .1 to .2, after chattr -a of .1: killed there, .1 is left
  // without its flag, and nothing else shows that a run was there.
  const killed = await rotateUnder(sb, ["-e", "trace=link,linkat", "-e", "inject=link,linkat:signal=KILL:when=1"]);
  t.not(killed.code, 0, "the run was killed");
  t.notMatch(attrs(`${sb.audit}.1`), /a/, "the killed run left .1 without its flag");
  t.notOk(exists(`${sb.audit}.2`), "nothing was moved");

  const r = await runRoot(sb, ["audit", "--rotate"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.toString(), /killed audit --rotate had lifted .*append-only.*put back/, "the admin is told");
  for (const f of logs()) t.match(attrs(f), /a/, `${JSON.stringify(f.slice(sb.dir.length))} is append-only again`);
  t.same(
    fs.readdirSync(sb.dir).filter((n) => n.includes("lifted")),
    [],
    "no trace of the repair is left",
  );
  t.equal((await runRoot(sb, ["audit", "--verify"])).code, 0, "the chain holds");
});
