// Issue 16, item 7: a pulling rsync (--server --sender) reads the client's filter rules from the
// protocol, and a merge or dir-merge rule names a file the server opens. Through the real binary as
// the test user: no rule can make it read a file outside what the key may pull, normal pulls stay
// byte-identical, and a host without user namespaces refuses rsync pulls (fail closed).
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { sandbox, snapshotAll, runGate, auditLines, run, TOP } from "./helpers/env.js";
import { rsyncClient, localTree, contents, lastSession, leftovers, RSYNC } from "./helpers/rsync-client.js";
import { PULL } from "./helpers/refusal.js";

t.setTimeout(10 * 60_000);

const FILES = { "d/a.gpg": "A\n", "d/b.gpg": "B\n", "d/sub/c.gpg": Buffer.alloc(200_000, 3), "e.gpg": "E\n" };

/** rsync's int: 4 bytes, little-endian. */
const int = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};

/**
 * What a hand-made client sends a pulling server: protocol 29 (no compat flags, no negotiation),
 * then its filter list, each rule as length and bytes, ended by 0. A real client sends a `merge`
 * rule's contents, never the rule; ours sends the rule, which the server then opens itself.
 */
function rawPull(rules: string[]): Buffer {
  return Buffer.concat([int(29), ...rules.flatMap((r) => [int(Buffer.byteLength(r)), Buffer.from(r)]), int(0)]);
}

/** Everything a session said, both channels, as text (the server's messages travel multiplexed in stdout). */
function chownTree(p: string, uid: number, gid: number): void {
  fs.lchownSync(p, uid, gid);
  if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p)) chownTree(path.join(p, n), uid, gid);
}

const said = (r: { stdout: Buffer; stderr: string }) => r.stdout.toString("latin1") + r.stderr;

t.test("16.7: a hand-made client's merge rule never opens a file outside the root", async (t) => {
  const sb = sandbox(t, { files: FILES });
  const before = snapshotAll(sb);
  for (const file of [path.join(sb.outside, "canary.txt"), path.join(sb.outside, "sub", "secret"), "/etc/passwd"]) {
    const r = await runGate(sb, `${PULL} . d/`, { input: rawPull([`. ${file}`]) });
    const text = said(r);
    // Opened, the file's lines become rules: the old code answered "Unknown filter rule", a probe.
    t.notMatch(text, /Unknown filter rule/, `${JSON.stringify(file)}: never parsed`);
    t.match(text, /failed to open (include|exclude|merge) file .*: No such file or directory/, `${JSON.stringify(file)}: rsync found no such file`);
    t.not(r.code, 0);
    t.match(lastSession(sb).find((l) => l.event === "rsync"), { direction: "pull", sandbox: true });
  }
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), [], "the sandbox's mount point is gone");
});

t.test("16.7: a real client's dir-merge rule naming a file in an ancestor of the root is never read", async (t) => {
  const sb = sandbox(t, { files: FILES });
  // sb.dir holds the root: the rule applies to every directory of the transfer below it.
  const rules = path.join(sb.dir, ".vb-rules");
  fs.writeFileSync(rules, "- a.gpg\n- sub/\n");
  fs.chmodSync(rules, 0o644);
  const before = snapshotAll(sb);
  const dst = localTree(t);
  const r = await rsyncClient(sb, ["-a", `--filter=dir-merge ${rules}`, "h:d/", `${dst}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(Object.keys(contents(dst)).sort(), ["a.gpg", "b.gpg", "sub/c.gpg"], "what is sent does not depend on the file's rules");
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});

t.test("16.7: with pull: metadata, a merge rule cannot read a volume of the root either", async (t) => {
  const vol = "duplicity-full.20240101T000000Z.vol1.difftar.gpg";
  const manifest = "duplicity-full.20240101T000000Z.manifest.gpg";
  const sb = sandbox(t, { files: { [`d/${vol}`]: "volume secret line\n", [`d/${manifest}`]: "manifest\n" }, config: { pull: "metadata" } });
  const before = snapshotAll(sb);
  const r = await runGate(sb, `${PULL} . d/${manifest}`, { input: rawPull([`. ${path.join(sb.root, "d", vol)}`]) });
  t.notMatch(said(r), /Unknown filter rule/, "the volume is never parsed");
  t.match(said(r), /failed to open (include|exclude|merge) file .*: No such file or directory/);
  t.not(r.code, 0);
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), [], "the sandbox's mount point is gone");
  // The manifest itself still comes back byte-identical through a real client.
  const dst = localTree(t);
  const ok = await rsyncClient(sb, ["-a", `h:d/${manifest}`, `${dst}/`]);
  t.equal(ok.code, 0, ok.stderr);
  t.same(contents(dst), { [manifest]: contents(path.join(sb.root, "d"))[manifest] });
});

t.test("16.7: normal pulls are byte-identical through the sandbox", async (t) => {
  const sb = sandbox(t, { files: { ...FILES, "name with space.gpg": "s\n", "x/y/z.gpg": "Z\n" } });
  fs.symlinkSync("a.gpg", path.join(sb.root, "d", "link"));
  const before = snapshotAll(sb);
  const whole = localTree(t);
  let r = await rsyncClient(sb, ["-a", "h:.", `${whole}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(whole), contents(sb.root), "the whole root");
  t.equal(fs.readlinkSync(path.join(whole, "d", "link")), "a.gpg", "a link travels as a link");
  t.equal(fs.statSync(path.join(whole, "d", "sub", "c.gpg")).mtimeMs, fs.statSync(path.join(sb.root, "d", "sub", "c.gpg")).mtimeMs, "times kept");
  const part = localTree(t);
  r = await rsyncClient(sb, ["-aR", "h:d/sub", "h:x/y/z.gpg", `${part}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(part), { "d/sub/c.gpg": contents(sb.root)["d/sub/c.gpg"], "x/y/z.gpg": contents(sb.root)["x/y/z.gpg"] }, "-R, two sources");
  const checked = localTree(t, { "a.gpg": "old\n" });
  r = await rsyncClient(sb, ["-rlc", "--no-whole-file", "h:d/", `${checked}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(checked), contents(path.join(sb.root, "d")), "-c and a delta against a changed local file");
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});

t.test("16.7: a root on a noexec, noatime filesystem is pulled as well (the sandbox keeps its locked flags)", { skip: process.getuid?.() !== 0 && "needs root" }, async (t) => {
  const sb = sandbox(t, { files: FILES, fsBytes: 8 << 20 });
  const m = spawnSync("/usr/bin/mount", ["-o", "remount,noexec,nosuid,nodev,noatime", path.dirname(sb.root)], { encoding: "utf8" });
  t.equal(m.status, 0, m.stderr);
  const dst = localTree(t);
  const r = await rsyncClient(sb, ["-a", "h:d/", `${dst}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(dst), contents(path.join(sb.root, "d")));
});

t.test("16.7: an rsync outside /usr (rsync.path) is bound into the sandbox too", async (t) => {
  const sb = sandbox(t, { files: FILES });
  const own = path.join(sb.dir, "prog", "rsync");
  fs.mkdirSync(path.dirname(own), { mode: 0o755 });
  fs.copyFileSync(RSYNC, own);
  fs.chmodSync(own, 0o755);
  sb.configure({ rsync: { path: own } });
  const dst = localTree(t);
  const r = await rsyncClient(sb, ["-a", "h:d/", `${dst}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(dst), contents(path.join(sb.root, "d")));
});

// A host without user namespaces, emulated for this gate alone: the gate runs in a user namespace
// of its own (as its root, mapped to ours) whose user.max_user_namespaces is 0.
const NO_USERNS = path.join(TOP, "test/helpers/no-userns");

t.test("16.7: without user namespaces an rsync pull is refused, and says what to use instead", { skip: process.getuid?.() !== 0 && "needs root" }, async (t) => {
  const sb = sandbox(t, { files: FILES });
  // The gate runs as the namespace's root, which is ours: what it must open is root's here.
  for (const p of [sb.root, sb.state, sb.audit]) chownTree(p, 0, 0);
  const before = snapshotAll(sb);
  const dst = localTree(t);
  const env = { ...sb.sshEnv, VB_RUN_AS: "" };
  const r = await run([RSYNC, "-a", "-e", `/usr/bin/unshare --user --map-root-user ${NO_USERNS}`, "h:d/", `${dst}/`], { env }, { timeoutMs: 120_000 });
  t.not(r.code, 0);
  t.match(r.stderr, /validate-backup: rsync pulls are refused on this host: .*user namespace.*No space left on device.*SFTP or scp/);
  t.same(contents(dst), {}, "nothing arrived");
  const err = auditLines(sb).find((l) => l.event === "error");
  t.match(err, { code: "NOT_ALLOWED", reason: /user namespace/ });
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});
