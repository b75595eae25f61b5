// The quota and the free-space reserve per key (issue 16, item 6), through the real binary: past
// limits.maxStoredBytes or limits.minFreeBytes new uploads are refused by every protocol with a
// clear message and an audit line, nothing stored is touched, two sessions of the key cannot
// together exceed the quota, another key on the same filesystem keeps working, and
// statvfs@openssh.com answers within the quota.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, snapshotAll, auditLines, run, FAKE_SSH, type Sandbox } from "./helpers/env.js";
import { rsyncClient, localTree, leftovers } from "./helpers/rsync-client.js";
import { scpClient } from "./helpers/scp-wire.js";
import { SftpClient, FX, PF, describe } from "./helpers/sftp-client.js";

t.setTimeout(10 * 60_000);

const KiB = 1024;
const MiB = 1024 * KiB;
const QUOTA = 1 * MiB;
const OLD = { "old.gpg": crypto.randomBytes(100 * KiB) };

function sftpBatch(sb: Sandbox, local: string, lines: string[]) {
  fs.writeFileSync(path.join(local, "batch"), lines.join("\n") + "\n");
  return run(["sftp", "-S", FAKE_SSH, "-b", "batch", "x:"], { env: sb.sshEnv, cwd: local }, { timeoutMs: 240_000 });
}

function quotaLines(sb: Sandbox) {
  return auditLines(sb).filter((l) => l.event === "quota");
}

/** The refusal left every stored byte alone and nothing under the new name. */
function untouched(t: Test, sb: Sandbox, before: ReturnType<typeof snapshotAll>, name: string): void {
  t.same(snapshotAll(sb), before, "nothing stored was touched, nothing added");
  t.notOk(fs.existsSync(path.join(sb.root, name)));
  t.same(leftovers(sb), [], "no temporary bytes left in state");
  t.match(quotaLines(sb).at(-1), { code: "QUOTA", anomaly: true, reason: /quota of 1\.0 MiB for this key reached/ }, "an audit line says why");
}

t.test("past maxStoredBytes every protocol refuses the upload; below it uploads work", async (t) => {
  const sb = sandbox(t, { files: OLD, config: { limits: { maxStoredBytes: QUOTA } } });
  const local = localTree(t, { "big.gpg": crypto.randomBytes(QUOTA), "small.gpg": crypto.randomBytes(100 * KiB) });
  const before = snapshotAll(sb);

  let r = await sftpBatch(sb, local, ["put big.gpg"]);
  t.not(r.code, 0, "sftp put fails");
  t.match(r.stderr, /quota of 1\.0 MiB for this key reached/);
  untouched(t, sb, before, "big.gpg");

  r = await scpClient(sb, ["big.gpg", "host:"], local);
  t.not(r.code, 0, "scp fails");
  t.match(r.stderr, /scp: big\.gpg: quota of 1\.0 MiB for this key reached/);
  untouched(t, sb, before, "big.gpg");

  r = await rsyncClient(sb, [path.join(local, "big.gpg"), "h:"]);
  t.equal(r.code, 23, "rsync: its partial-transfer status");
  t.match(r.stderr, /validate-backup: rsync: quota of 1\.0 MiB for this key reached/);
  untouched(t, sb, before, "big.gpg");

  // Below the quota each protocol still works, and what it stored counts: 100 + 3 x 100 KiB stored.
  r = await sftpBatch(sb, local, ["put small.gpg s1.gpg"]);
  t.equal(r.code, 0, r.stderr);
  r = await scpClient(sb, ["small.gpg", "host:s2.gpg"], local);
  t.equal(r.code, 0, r.stderr);
  r = await rsyncClient(sb, [path.join(local, "small.gpg"), "h:s3.gpg"]);
  t.equal(r.code, 0, r.stderr);
  t.same(["s1.gpg", "s2.gpg", "s3.gpg"].map((f) => fs.statSync(path.join(sb.root, f)).size), [100 * KiB, 100 * KiB, 100 * KiB]);

  // statvfs@openssh.com (sftp df) tells the key's size and room, not the disk's.
  r = await sftpBatch(sb, local, ["df"]);
  t.equal(r.code, 0, r.stderr);
  const row = r.stdout.toString().trim().split("\n").at(-1)!.trim().split(/\s+/).map(Number);
  t.equal(row[0], 1024, "df: size is the quota (1024 KiB)");
  t.ok(row[2]! <= 1024 - 400 && row[2]! >= 1024 - 400 - 64, `df: available is what the quota leaves (${row[2]} KiB)`);
});

t.test("rsync's staging counts while it fills: a push past the quota is stopped, not received whole", async (t) => {
  const sb = sandbox(t, { config: { limits: { maxStoredBytes: QUOTA } } });
  const local = localTree(t, { "huge.gpg": crypto.randomBytes(64 * MiB) });
  const before = snapshotAll(sb);
  const started = Date.now();
  // 4 MiB/s: received whole, the 64 MiB would take 16 s.
  const r = await rsyncClient(sb, ["--bwlimit=4096", path.join(local, "huge.gpg"), "h:"]);
  const took = Date.now() - started;
  // The client, cut off mid-stream, may exit with its own status (10, 12) rather than ours.
  t.not(r.code, 0);
  t.match(auditLines(sb).at(-1), { event: "session-end", exit: 23, published: 0 }, "the session exits 23");
  t.match(r.stderr, /quota of 1\.0 MiB for this key reached/);
  t.ok(took < 8000, `stopped after ${took} ms, long before the whole file arrived`);
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});

t.test("two sessions of the key at once cannot together exceed the quota", async (t) => {
  const sb = sandbox(t, { config: { limits: { maxStoredBytes: QUOTA } } });
  const a = SftpClient.gate(sb);
  const b = SftpClient.gate(sb);
  t.teardown(async () => {
    for (const c of [a, b]) if (c.alive) await c.kill();
  });
  await a.init();
  await b.init();
  const ha = await a.openHandle("a.gpg", PF.WRITE | PF.CREAT | PF.TRUNC);
  const hb = await b.openHandle("b.gpg", PF.WRITE | PF.CREAT | PF.TRUNC);
  const chunk = crypto.randomBytes(32 * KiB);
  const failed: string[] = [];
  // In turns, 640 KiB each: 1.25 MiB together.
  for (let off = 0; off < 640 * KiB; off += chunk.length)
    for (const [c, h, name] of [[a, ha, "a"], [b, hb, "b"]] as const) {
      if (failed.includes(name)) continue;
      const w = await c.write(h, off, chunk);
      if (w.status?.code !== FX.OK) {
        t.match(w.status?.message, /quota of 1\.0 MiB for this key reached/, `${name}: ${describe(w)}`);
        failed.push(name);
      }
    }
  t.equal(failed.length, 1, "exactly one of the two uploads was refused");
  const ca = await a.close(ha);
  const cb = await b.close(hb);
  t.same([ca.status?.code, cb.status?.code].sort(), [FX.OK, FX.FAILURE], "one published, the other's CLOSE fails");
  await a.end();
  await b.end();
  const stored = fs.readdirSync(sb.root).map((f) => fs.statSync(path.join(sb.root, f)).size);
  t.same(stored, [640 * KiB], "only the one within the quota is stored");
});

t.test("the free-space reserve: past it uploads are refused; another key on the same filesystem is not held by this key's quota", async (t) => {
  // Root and state on a 16 MiB filesystem that must keep 8 MiB free.
  const sb = sandbox(t, { fsBytes: 16 * MiB, config: { limits: { minFreeBytes: 8 * MiB } } });
  const local = localTree(t, { "ten.gpg": crypto.randomBytes(10 * MiB), "three.gpg": crypto.randomBytes(3 * MiB), "one.gpg": crypto.randomBytes(MiB) });
  const before = snapshotAll(sb);
  let r = await scpClient(sb, ["ten.gpg", "host:"], local);
  t.not(r.code, 0);
  t.match(r.stderr, /scp: ten\.gpg: the filesystem keeps 8\.0 MiB free \(\d+\.\d MiB free now\): upload refused, nothing stored was touched/);
  t.same(snapshotAll(sb), before, "nothing stored was touched");
  t.match(quotaLines(sb).at(-1), { code: "QUOTA", reason: /keeps 8\.0 MiB free/ });
  r = await scpClient(sb, ["one.gpg", "host:"], local);
  t.equal(r.code, 0, `below the reserve: ${r.stderr}`);

  // A second key, its root and state on the same filesystem, with a quota of 2 MiB it has reached.
  const top = path.dirname(sb.root);
  const other = { root: path.join(top, "other"), state: path.join(top, "other.state"), config: path.join(sb.dir, "other.json"), audit: path.join(sb.dir, "other.log") };
  fs.mkdirSync(other.root);
  fs.mkdirSync(other.state);
  fs.writeFileSync(path.join(other.root, "full.gpg"), crypto.randomBytes(2 * MiB));
  fs.writeFileSync(other.audit, "");
  const { uid, gid } = fs.statSync(sb.root);
  for (const p of [other.root, other.state, path.join(other.root, "full.gpg"), other.audit]) fs.chownSync(p, uid, gid);
  fs.writeFileSync(other.config, JSON.stringify({ label: "other", root: other.root, audit: { file: other.audit }, limits: { minFreeBytes: 0, maxStoredBytes: 2 * MiB } }));
  r = await run(["/usr/bin/scp", "-O", "-q", "-S", FAKE_SSH, "one.gpg", "host:"], { cwd: local, env: { ...sb.sshEnv, VB_CONFIG: other.config } }, { timeoutMs: 120_000 });
  t.not(r.code, 0, "the other key is at its own quota");
  t.match(r.stderr, /quota of 2\.0 MiB for this key reached/);
  r = await scpClient(sb, ["three.gpg", "host:"], local);
  t.equal(r.code, 0, `this key is not held by the other's quota: ${r.stderr}`);
});
