// Issue 17, item 6 (restic): a lock file in a restic repository's locks/ may be removed by any
// session of the key, so that a killed `restic backup` leaves no lock only root can clear. Nothing
// else becomes removable: not a data, index, snapshot or key file, not a directory or link named
// like a lock, not a file whose name is not the SHA-256 of its bytes (as every restic lock's is),
// not a lock outside a repository's locks/, not a sealed one. seal leaves locks alone, the ledger
// of verify --stored drops a removed lock, and prune's "nothing arrived" warning ignores locks.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import { sandbox, snapshotAll, auditLines, gateIds, run, FAKE_SSH, type Sandbox } from "./helpers/env.js";
import { runRoot } from "./helpers/duplicity.js";
import { SftpClient, FX, FX_NAME, describe } from "./helpers/sftp-client.js";
import { FULL_ONLY } from "./helpers/scale.js";
import { Ledger } from "../src/housekeeping/ledger.js";
import { lastArrival, readArrivals, recordArrival, recordRemoval } from "../src/vault/arrivals.js";
import { whyNotLock } from "../src/profile/restic.js";
import { RecentArrivals } from "../src/vault/recent.js";
import { open } from "../src/housekeeping/context.js";
import { seal, type SealReport } from "../src/housekeeping/seal.js";

t.setTimeout(15 * 60 * 1000); // restic derives its key with scrypt on every run: slow on a busy machine

const sha = (b: Buffer | string) => crypto.createHash("sha256").update(b).digest("hex");
const settled = { housekeeping: { minAgeMinutes: 0 }, profile: "plain" };

/** A lock as restic names it: its bytes' SHA-256. */
function lockOf(content: string): [string, string] {
  return [sha(content), content];
}

/** A restic-looking repository at `repo` of the root, as earlier sessions of the key left it. */
function plantRepo(sb: Sandbox, repo: string, extra: Record<string, string | Buffer> = {}): void {
  const { uid, gid } = gateIds();
  const files: Record<string, string | Buffer> = {
    config: "config bytes",
    [`keys/${sha("key")}`]: "key",
    [`data/ab/${sha("pack")}`]: "pack",
    [`index/${sha("index")}`]: "index",
    [`snapshots/${sha("snap")}`]: "snap",
    ...extra,
  };
  for (const d of ["data", "index", "keys", "locks", "snapshots"]) fs.mkdirSync(path.join(sb.root, repo, d), { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(sb.root, repo, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content, { mode: 0o600 });
  }
  const own = (p: string) => {
    fs.lchownSync(p, uid, gid);
    if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p)) own(path.join(p, n));
  };
  own(path.join(sb.root, repo.split("/")[0]!));
}

async function connect(t: Test, sb: Sandbox): Promise<SftpClient> {
  const c = SftpClient.gate(sb);
  t.teardown(() => {
    if (c.alive) c.kill();
  });
  await c.init();
  return c;
}

t.test("the rule, row by row (pure)", async (t) => {
  const [name, content] = lockOf("lock bytes");
  const file = { isFile: () => true, nlink: 1, size: content.length } as unknown as fs.Stats;
  const dir = { isDirectory: () => true, isFile: () => false } as unknown as fs.Stats;
  const cfg = { isDirectory: () => false, isFile: () => true } as unknown as fs.Stats;
  const repo = (n: string) => (n === "config" ? cfg : ["data", "index", "keys", "snapshots"].includes(n) ? dir : null);
  const ok = { name, dir: "locks", st: file, repo, sha256: () => sha(content) };
  t.equal(whyNotLock(ok), undefined, "a lock");
  t.match(whyNotLock({ ...ok, name: name.toUpperCase() }), /named as restic names lock files/);
  t.match(whyNotLock({ ...ok, name: `${name}-restic-temp-0123` }), /named as restic names lock files/);
  t.match(whyNotLock({ ...ok, dir: "data" }), /not the locks\/ directory of a restic repository/);
  t.match(whyNotLock({ ...ok, repo: (n: string) => (n === "keys" ? null : repo(n)) }), /not the locks\/ directory of a restic repository/);
  t.match(whyNotLock({ ...ok, repo: (n: string) => (n === "config" ? dir : repo(n)) }), /not the locks\/ directory of a restic repository/);
  t.match(whyNotLock({ ...ok, st: { ...file, nlink: 2 } as fs.Stats }), /regular file with a single link/);
  t.match(whyNotLock({ ...ok, st: { ...file, isFile: () => false } as unknown as fs.Stats }), /regular file with a single link/);
  t.match(whyNotLock({ ...ok, st: { ...file, size: 1 << 20 } as fs.Stats }), /larger than/);
  t.match(whyNotLock({ ...ok, st: { ...file, uid: 0 } as fs.Stats, uid: 1000 }), /not this account's/);
  t.equal(whyNotLock({ ...ok, st: { ...file, uid: 1000 } as fs.Stats, uid: 1000 }), undefined, "the account's own");
  t.match(whyNotLock({ ...ok, sha256: () => sha("other") }), /SHA-256 of its bytes/);
});

t.test("REMOVE of a lock another session left: allowed, audited, counted; nothing else changes", async (t) => {
  const [lock, content] = lockOf("a lock of a killed restic backup");
  const sb = sandbox(t, { config: { profile: "plain", limits: { maxStoredBytes: 10_000_000 } } });
  plantRepo(sb, "repo", { [`locks/${lock}`]: content });
  // The quota's stored figure, as a walk left it a moment ago.
  const { uid, gid } = gateIds();
  const stored = path.join(sb.state, "quota", "stored");
  fs.mkdirSync(path.dirname(stored), { mode: 0o700 });
  fs.writeFileSync(stored, JSON.stringify({ bytes: 5000, walked: Date.now() }));
  for (const p of [path.dirname(stored), stored]) fs.chownSync(p, uid, gid);
  const before = snapshotAll(sb);
  const c = await connect(t, sb);
  const r = await c.remove(`repo/locks/${lock}`);
  t.equal(r.status?.code, FX.OK, describe(r));
  await c.end();
  const after = snapshotAll(sb);
  t.same(
    Object.keys(before).filter((k) => after[k] !== before[k]),
    [`root/repo/locks/${lock}`],
    "only the lock is gone",
  );
  t.notOk(`root/repo/locks/${lock}` in after);
  t.equal((JSON.parse(fs.readFileSync(stored, "utf8")) as { bytes: number }).bytes, 5000 - content.length, "its bytes left the quota");
  const removal = fs.readFileSync(path.join(sb.state, "arrivals.log"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(removal, [{ p: `repo/locks/${lock}`, r: 1 }], "one removal line in the arrivals record");
  const line = auditLines(sb).find((l) => l.event === "remove-lock");
  t.match(line, { path: `repo/locks/${lock}`, size: content.length, sha256: lock }, "one remove-lock line with what was removed");
  const ledger = new Ledger("test");
  ledger.apply({ label: "test", event: "publish", path: `repo/locks/${lock}`, sha256: lock });
  ledger.apply({ ...line!, label: "test" });
  t.same([...ledger.left()], [], "verify --stored's ledger: a removed lock is not missing");
});

t.test("a repository at the root itself: its locks are locks too", async (t) => {
  const [lock, content] = lockOf("lock at the top");
  const sb = sandbox(t, { config: { profile: "plain" } });
  plantRepo(sb, ".", { [`locks/${lock}`]: content });
  const c = await connect(t, sb);
  t.equal((await c.remove(`locks/${lock}`)).status?.code, FX.OK);
  t.equal((await c.remove(`locks/${lock}`)).status?.code, FX.NO_SUCH_FILE, "gone");
  await c.end();
});

t.test("attack: nothing but a lock can be removed, and a lock only when it is one", async (t) => {
  const { uid } = gateIds();
  const [lock, content] = lockOf("a real lock");
  const [sealed, sealedContent] = lockOf("a sealed lock");
  const [other, otherContent] = lockOf("a lock of another account's restic prune");
  const [linked, linkedContent] = lockOf("a lock with a second link");
  const [dirLock] = lockOf("a directory");
  const [linkLock] = lockOf("a link");
  const [fake] = lockOf("not these bytes");
  const [big, bigContent] = lockOf("x".repeat(70 * 1024));
  const [stray, strayContent] = lockOf("a lock outside any repository");
  const [nested, nestedContent] = lockOf("a lock under data/");
  const sb = sandbox(t, { config: { profile: "plain" } });
  plantRepo(sb, "repo", {
    [`locks/${lock}`]: content,
    [`locks/${sealed}`]: sealedContent,
    [`locks/${other}`]: otherContent,
    [`locks/${linked}`]: linkedContent,
    [`locks/${fake}`]: "planted bytes whose hash is not the name",
    [`locks/${big}`]: bigContent,
    [`locks/${lock}-restic-temp-0123456789abcdef`]: content,
    [`data/locks/${nested}`]: nestedContent,
  });
  fs.mkdirSync(path.join(sb.root, "repo/locks", dirLock));
  fs.symlinkSync(`../data/ab/${sha("pack")}`, path.join(sb.root, "repo/locks", linkLock));
  fs.lchownSync(path.join(sb.root, "repo/locks", linkLock), uid, gateIds().gid);
  fs.chownSync(path.join(sb.root, "repo/locks", dirLock), uid, gateIds().gid);
  fs.chownSync(path.join(sb.root, "repo/locks", sealed), 0, 0);
  fs.chownSync(path.join(sb.root, "repo/locks", other), 65534, 65534);
  fs.chmodSync(path.join(sb.root, "repo/locks", other), 0o644);
  fs.linkSync(path.join(sb.root, "repo/locks", linked), path.join(sb.root, "repo/keys", "second-name"));
  // A tree that is no repository (no config, keys/ … beside its locks/).
  fs.mkdirSync(path.join(sb.root, "plain/locks"), { recursive: true });
  fs.writeFileSync(path.join(sb.root, "plain/locks", stray), strayContent);
  for (const p of ["plain", "plain/locks", `plain/locks/${stray}`]) fs.chownSync(path.join(sb.root, p), uid, gateIds().gid);

  const c = await connect(t, sb);
  const probes: [string, string, RegExp][] = [
    ["a data file", `repo/data/ab/${sha("pack")}`, /cannot be removed$/],
    ["an index file", `repo/index/${sha("index")}`, /cannot be removed$/],
    ["a snapshot", `repo/snapshots/${sha("snap")}`, /cannot be removed$/],
    ["a key", `repo/keys/${sha("key")}`, /cannot be removed$/],
    ["the config", "repo/config", /cannot be removed$/],
    ["a directory named like a lock", `repo/locks/${dirLock}`, /not a regular file with a single link/],
    ["a link named like a lock", `repo/locks/${linkLock}`, /not a regular file with a single link/],
    ["a lock-named file whose name is not its hash", `repo/locks/${fake}`, /SHA-256 of its bytes/],
    ["a lock-named file larger than any lock", `repo/locks/${big}`, /larger than/],
    ["restic's temporary name", `repo/locks/${lock}-restic-temp-0123456789abcdef`, /named as restic names lock files/],
    ["a lock with a second link", `repo/locks/${linked}`, /single link/],
    ["a sealed lock", `repo/locks/${sealed}`, /not this account's \(sealed/],
    ["another account's lock (a prune's)", `repo/locks/${other}`, /not this account's/],
    ["a lock outside a repository", `plain/locks/${stray}`, /not the locks\/ directory of a restic repository/],
    ["a locks/ directory under data/", `repo/data/locks/${nested}`, /not the locks\/ directory of a restic repository/],
    ["the locks directory itself", "repo/locks", /cannot be removed$/],
    ["a lock through '..'", `repo/data/../locks/${fake}`, /SHA-256 of its bytes/],
  ];
  const before = snapshotAll(sb);
  for (const [what, p, msg] of probes) {
    const seen = auditLines(sb).length;
    const r = await c.remove(p);
    t.equal(FX_NAME[r.status?.code ?? -1], "PERMISSION_DENIED", `${what}: refused (${describe(r)})`);
    t.match(r.status?.message ?? "", /^append-only: /, `${what}: append-only`);
    t.match(r.status?.message ?? "", msg, `${what}: says why`);
    t.equal(auditLines(sb).slice(seen).filter((l) => l.event === "refused" && l.reason === r.status?.message).length, 1, `${what}: one audit line`);
  }
  t.same(snapshotAll(sb), before, "no side effect: every file, inside and outside the root, unchanged");
  t.equal((await c.remove(`repo/locks/${lock}`)).status?.code, FX.OK, "the real lock still goes");
  await c.end();
  t.notOk(auditLines(sb).some((l) => l.event === "remove-lock" && l.path !== `repo/locks/${lock}`), "no other removal");
});

t.test("a read-only key removes no lock", async (t) => {
  const [lock, content] = lockOf("a lock");
  const sb = sandbox(t, { config: { profile: "plain", access: "read-only" } });
  plantRepo(sb, "repo", { [`locks/${lock}`]: content });
  const before = snapshotAll(sb);
  const c = await connect(t, sb);
  const r = await c.remove(`repo/locks/${lock}`);
  t.equal(FX_NAME[r.status?.code ?? -1], "PERMISSION_DENIED", describe(r));
  t.match(r.status?.message ?? "", /^read-only: /);
  await c.end();
  t.same(snapshotAll(sb), before);
});

t.test("seal leaves a repository's locks the key's (its other files sealed); the key can still remove them", async (t) => {
  const { uid, gid } = gateIds();
  const [lock, content] = lockOf("lock to survive seal");
  const [fake] = lockOf("other bytes");
  const sb = sandbox(t, { config: settled });
  plantRepo(sb, "repo", { [`locks/${lock}`]: content, [`locks/${fake}`]: "not a lock" });
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /left 1 restic lock files to the key/);
  const st = fs.statSync(path.join(sb.root, "repo/locks", lock));
  t.same([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o600], "the lock is untouched");
  t.equal(fs.statSync(path.join(sb.root, "repo/locks", fake)).uid, 0, "a lock-named file that is no lock is sealed");
  t.equal(fs.statSync(path.join(sb.root, "repo/locks")).mode & 0o7777, 0o1770, "locks/ itself is sealed (sticky)");
  t.equal(fs.statSync(path.join(sb.root, "repo/data/ab", sha("pack"))).uid, 0, "data is sealed");
  t.match(auditLines(sb).at(-1), { event: "seal", locks: 1 });
  const c = await connect(t, sb);
  t.equal((await c.remove(`repo/locks/${lock}`)).status?.code, FX.OK, "the key removes it from the sealed, sticky locks/");
  t.equal(FX_NAME[(await c.remove(`repo/locks/${fake}`)).status?.code ?? -1], "PERMISSION_DENIED");
  await c.end();
});

t.test("seal: a lock restic removes while seal looks at it is no failure and no oddity", async (t) => {
  const [lock, content] = lockOf("removed at the end of the run");
  const [kept, keptContent] = lockOf("still there");
  const sb = sandbox(t, { config: settled });
  plantRepo(sb, "repo", { [`locks/${lock}`]: content, [`locks/${kept}`]: keptContent });
  let removed = false;
  const h = open(sb.config, "seal", (comps, name) => {
    if (name === lock && !removed) {
      removed = true;
      fs.unlinkSync(path.join(sb.root, "repo/locks", lock));
    }
  });
  let report: SealReport;
  try {
    report = seal(h);
  } finally {
    h.close();
  }
  t.ok(removed, "removed mid-walk");
  t.same([report.failed, report.odd, report.locks], [0, [], 1], "no failure, nothing odd, the other lock left");
  t.equal(fs.statSync(path.join(sb.root, "repo/locks", kept)).uid, gateIds().uid);
});

t.test("arrivals: a removal takes a file's record out; locks are never the last arrival", async (t) => {
  const sb = sandbox(t);
  const [lock] = lockOf("x");
  const a = path.join(sb.root, "a.bin");
  fs.writeFileSync(a, "a");
  fs.mkdirSync(path.join(sb.state, "locks"), { recursive: true });
  const st = fs.statSync(a);
  recordArrival(sb.state, "a.bin", st, 1000);
  recordArrival(sb.state, `repo/locks/${lock}`, st, 5000);
  recordArrival(sb.state, "gone.bin", { dev: 1, ino: 2 }, 2000);
  recordRemoval(sb.state, "gone.bin", { dev: 1, ino: 2 }, 3000);
  recordRemoval(sb.state, "a.bin", { dev: 9, ino: 9 }, 3000); // another file's removal: a.bin stays
  const fd = fs.openSync(sb.state, "r");
  try {
    const m = readArrivals(fd);
    t.same([...m.keys()].sort(), ["a.bin", `repo/locks/${lock}`]);
    t.equal(lastArrival(m), 1000, "the lock's arrival is not a backup's");
  } finally {
    fs.closeSync(fd);
  }
});

t.test("recent arrivals: a removed file's times can no longer be set by another session", async (t) => {
  const sb = sandbox(t);
  fs.mkdirSync(path.join(sb.state, "locks"), { recursive: true });
  const now = Date.now();
  recordArrival(sb.state, "a.bin", { dev: 1, ino: 2 }, now - 1000, "test");
  recordArrival(sb.state, "b.bin", { dev: 1, ino: 3 }, now - 1000, "test");
  const recent = new RecentArrivals(sb.state);
  t.ok(recent.find("a.bin", now));
  recordRemoval(sb.state, "a.bin", { dev: 1, ino: 2 }, now);
  recordRemoval(sb.state, "b.bin", { dev: 1, ino: 9 }, now); // another file of that name
  t.equal(recent.find("a.bin", now), undefined, "read from the tail: gone");
  t.ok(recent.find("b.bin", now), "a removal of another inode takes nothing out");
  t.equal(new RecentArrivals(sb.state).find("a.bin", now), undefined, "read afresh: gone");
});

/** Poll `dir` until fn finds something, or the time is up. */
async function until<T>(fn: () => T | undefined, ms: number): Promise<T | undefined> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    const v = fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

const LOCK = /^[0-9a-f]{64}$/;

// restic's scrypt costs minutes of CI per run: the full run only.
t.test("restic 0.14: a backup killed with SIGKILL leaves a lock; seal keeps it the key's; unlock through the key removes it; check then works", FULL_ONLY, async (t) => {
  const { uid } = gateIds();
  const sb = sandbox(t, { config: settled });
  const local = fs.mkdtempSync("/tmp/vb-restic-");
  t.teardown(() => fs.rmSync(local, { recursive: true, force: true }));
  const data = path.join(local, "data");
  fs.mkdirSync(data);
  fs.writeFileSync(path.join(data, "small.txt"), "small\n");
  const env = { ...sb.sshEnv, RESTIC_PASSWORD: "test password", RESTIC_CACHE_DIR: path.join(local, "cache") };
  const argv = (...args: string[]) => ["restic", "-r", `sftp:x:${sb.root}/repo`, "-o", `sftp.command=${FAKE_SSH} -s x sftp`, ...args];
  const restic = (...args: string[]) => run(argv(...args), { env, cwd: local }, { timeoutMs: 300_000 });
  const locksDir = path.join(sb.root, "repo", "locks");
  const locks = () => fs.readdirSync(locksDir).filter((n) => LOCK.test(n));

  let r = await restic("init");
  t.equal(r.code, 0, `init: ${r.stderr}`);
  r = await restic("backup", "--host", "h", data);
  t.equal(r.code, 0, `backup 1: ${r.stderr}`);
  t.same(locks(), [], "a finished backup removed its own lock");

  // Enough bytes that the run is still uploading when its lock is seen.
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(data, `big${i}.bin`), crypto.randomBytes(8 * 1024 * 1024));
  const [bin, ...args] = argv("backup", "--host", "h", data);
  const child = spawn(bin!, args, { env, cwd: local, stdio: "ignore" });
  const exited = new Promise((resolve) => child.on("close", resolve));
  const seen = await until(() => (locks().length ? locks() : undefined), 120_000);
  t.ok(seen, "the running backup's lock appeared");
  t.equal(child.exitCode, null, "killed while it ran");
  child.kill("SIGKILL");
  await exited;
  const left = locks();
  t.equal(left.length, 1, "the killed backup left its lock");
  const lockPath = path.join(locksDir, left[0]!);
  t.equal(sha(fs.readFileSync(lockPath)), left[0], "restic names a lock by the SHA-256 of its bytes (what the rule checks)");
  // Let the gate of the killed run see its stdin close and end its session.
  const count = (e: string) => auditLines(sb).filter((l) => l.event === e).length;
  await until(() => (count("session-end") === count("request") ? true : undefined), 20_000);

  const s = await runRoot(sb, ["seal"]);
  t.equal(s.code, 0, s.stderr);
  t.equal(fs.statSync(lockPath).uid, uid, "seal left the lock the key's");
  t.equal(fs.statSync(path.join(sb.root, "repo", "config")).uid, 0, "and sealed the repository's config");

  r = await restic("backup", "--host", "h", data);
  t.equal(r.code, 0, `a backup takes a shared lock: the stale one is not in its way: ${r.stderr}`);
  r = await restic("check");
  t.not(r.code, 0, "check needs an exclusive lock: the stale lock is in its way");
  t.match(r.stderr, /locked/);
  r = await restic("unlock");
  t.equal(r.code, 0, `unlock through the same key: ${r.stderr}`);
  t.same(locks(), [], "the stale lock is gone");
  t.ok(auditLines(sb).some((l) => l.event === "remove-lock" && l.path === `repo/locks/${left[0]}`), "its removal is audited");
  r = await restic("check");
  t.equal(r.code, 0, `check: ${r.stderr}`);
  r = await restic("backup", "--host", "h", data);
  t.equal(r.code, 0, `the next backup: ${r.stderr}`);
  t.same(locks(), []);
  r = await restic("snapshots", "--json");
  t.equal((JSON.parse(r.stdout.toString()) as unknown[]).length, 3, "three snapshots: the killed run made none");
  const v = await runRoot(sb, ["verify", "--stored"]);
  t.equal(v.code, 0, `verify --stored: every file as published, no removed lock missing: ${v.stdout.toString().slice(-2000)}`);
  t.match(v.stdout.toString(), /0 changed, 0 missing, 0 unrecorded, 0 unreadable: OK/);
});
