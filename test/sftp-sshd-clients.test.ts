// The clients people use, through a real sshd and the installed layout (issue 20): rclone (Go's
// pkg/sftp, concurrent writes and a pool of SSH sessions, all at its default settings) and lftp.
// Nothing but 127.0.0.1 is ever contacted.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { run, snapshot, type RunResult } from "./helpers/env.js";
import { haveSshd, startSshd, account, clientKey, vb, succeeded, type Account, type Sshd } from "./helpers/sshd.js";

const RCLONE = "/usr/bin/rclone";
/** What rclone 1.60 runs over SSH to learn the remote shell and its hash commands. */
const RCLONE_PROBES = /^(echo |md5sum$|md5 -r$|sha1sum$|sha1 -r$|rclone (md5|sha1)sum$)/;
const LFTP = "/usr/bin/lftp";
if (!haveSshd) t.plan(0, "needs root, /usr/sbin/sshd and the OpenSSH clients");
t.setTimeout(10 * 60 * 1000);

// Sizes that are not multiples of 32 KiB (pkg/sftp's chunk), so the last WRITE of a file is short,
// and big enough for rclone's concurrent writes; one empty file, one nested.
const TREE: Record<string, number> = {
  "a.gpg": 1,
  "b.gpg": 32 * 1024 + 1,
  "c.gpg": 3 * 1024 * 1024 + 12_345,
  "empty.gpg": 0,
  "sub/d.gpg": 700_001,
  "sub/deeper/e.gpg": 98_765,
};

function makeTree(dir: string): void {
  for (const [name, size] of Object.entries(TREE)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), crypto.randomBytes(size));
    // A time in the past, as a real backup file has: what rclone sets on the copy.
    fs.utimesSync(path.join(dir, name), 1_700_000_000, 1_700_000_000);
  }
}

/** Every file of dir: relative name -> size and SHA-256 of its content (a short diff on failure). */
function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else {
        const b = fs.readFileSync(path.join(d, e.name));
        out[r] = `${b.length} ${crypto.createHash("sha256").update(b).digest("hex")}`;
      }
    }
  };
  walk(dir, "");
  return out;
}

function auditOf(a: Account): Array<Record<string, unknown>> {
  return fs
    .readFileSync(path.join(a.logDir, `${a.user}.log`), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** An installed account behind the fixture's sshd, and a client key for it. */
async function installed(t: Test, sshd: Sshd): Promise<{ a: Account; key: string }> {
  const a = account(t, { prefix: "cl" });
  const key = clientKey(a.dir);
  const inst = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, "--sshd-dropin", "--sshd-config", sshd.config]);
  succeeded(t, inst, "install-remote --sshd-dropin");
  t.teardown(() => fs.rmSync(path.join(sshd.dir, "sshd_config.d", `validate-backup-${a.user}.conf`), { force: true }));
  return { a, key };
}

/** rclone with a remote named `vb` defined by environment variables alone (no config file). */
function rclone(sshd: Sshd, a: Account, key: string, ...args: string[]): Promise<RunResult> {
  const env = {
    PATH: "/usr/bin:/bin",
    HOME: a.dir,
    RCLONE_CONFIG: "/dev/null",
    RCLONE_CONFIG_VB_TYPE: "sftp",
    RCLONE_CONFIG_VB_HOST: "127.0.0.1",
    RCLONE_CONFIG_VB_PORT: String(sshd.port),
    RCLONE_CONFIG_VB_USER: a.user,
    RCLONE_CONFIG_VB_KEY_FILE: key,
    RCLONE_CONFIG_VB_KNOWN_HOSTS_FILE: sshd.knownHosts,
  };
  return run([RCLONE, ...args, "--stats-log-level", "NOTICE", "-v"], { env, cwd: a.dir }, { timeoutMs: 300_000 });
}

t.test("rclone 1.60 (pkg/sftp), default settings", { skip: !fs.existsSync(RCLONE) && "rclone is not installed" }, async (t) => {
  const sshd = await startSshd(t);
  const { a, key } = await installed(t, sshd);
  const src = path.join(a.dir, "tree");
  makeTree(src);
  const rc = (...args: string[]) => rclone(sshd, a, key, ...args);
  const stored = path.join(a.root, "tree");

  await t.test("copy --immutable of a tree: exit 0, byte-identical, times kept", async (t) => {
    const r = await rc("copy", "--immutable", src, "vb:tree");
    succeeded(t, r, "rclone copy --immutable");
    t.same(files(stored), files(src), "every file stored byte for byte");
    t.equal(Math.floor(fs.statSync(path.join(stored, "c.gpg")).mtimeMs / 1000), 1_700_000_000, "the modification time rclone set");
    const lines = auditOf(a);
    t.equal(lines.filter((l) => l.event === "publish").length, Object.keys(TREE).length, "one publish line per file");
    t.notOk(lines.some((l) => l.event === "refused"), "nothing refused");
    // rclone probes the shell and the hash commands over SSH: refused and audited, nothing else is.
    const denied = lines.filter((l) => l.decision === "deny").map((l) => String(l.command));
    t.same(denied.filter((c) => !RCLONE_PROBES.test(c)), [], `only rclone's probes refused (${denied.length})`);
    // Times set on another session than the upload's (rclone's pool): the file's time, audited.
    for (const l of lines.filter((l) => l.event === "times-set")) t.match(l, { path: /^tree\//, mtime: 1_700_000_000 }, `times-set ${String(l.path)}`);
  });

  await t.test("the same again: exit 0, nothing sent", async (t) => {
    const before = snapshot(a.root);
    const r = await rc("copy", "--immutable", src, "vb:tree");
    succeeded(t, r, "rclone copy --immutable, again");
    t.match(r.stderr, /There was nothing to transfer/, "rclone sent nothing");
    t.match(r.stderr, /Checks:\s+6 \/ 6, 100%/, "after checking every file (size and time)");
    t.same(snapshot(a.root), before, "the stored tree unchanged");
  });

  await t.test("a changed local file: non-zero, the stored file unchanged", async (t) => {
    const before = snapshot(a.root);
    fs.writeFileSync(path.join(src, "b.gpg"), crypto.randomBytes(TREE["b.gpg"]! + 7));
    const r = await rc("copy", "--immutable", src, "vb:tree");
    t.not(r.code, 0, "rclone fails");
    t.match(r.stderr, /immutable file modified/, "and says why");
    t.same(snapshot(a.root), before, "the stored tree unchanged");
  });

  await t.test("shell_type = none: no command probes", async (t) => {
    const seen = auditOf(a).length;
    const r = await rclone(sshd, a, key, "lsf", "-R", "vb:tree", "--sftp-shell-type", "none");
    succeeded(t, r, "rclone lsf");
    t.match(r.stdout.toString(), /sub\/deeper\/e\.gpg/);
    t.same(auditOf(a).slice(seen).filter((l) => l.decision === "deny"), [], "no command refused");
  });

  await t.test("sync after a local delete: nothing deleted remotely", async (t) => {
    const before = snapshot(a.root);
    fs.rmSync(path.join(src, "sub/d.gpg"));
    fs.rmSync(path.join(src, "b.gpg"));
    const r = await rc("sync", src, "vb:tree");
    t.not(r.code, 0, "rclone fails");
    t.match(r.stderr, /sub\/d\.gpg: Couldn't delete/, "naming the deletions it could not make");
    t.same(snapshot(a.root), before, "the stored tree unchanged");
    t.ok(auditOf(a).some((l) => l.event === "refused" && l.op === "remove" && l.code === "IMMUTABLE"), "the refused removals are audited");
  });
});

t.test("lftp mirror -R", { skip: !fs.existsSync(LFTP) && "lftp is not installed" }, async (t) => {
  const sshd = await startSshd(t);
  const { a, key } = await installed(t, sshd);
  const src = path.join(a.dir, "tree");
  makeTree(src);
  const connect = `ssh -a -x -F /dev/null -i ${key} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=${sshd.knownHosts} -p ${sshd.port}`;
  const lftp = (script: string) =>
    run([LFTP, "-c", `set sftp:connect-program "${connect}"; open sftp://${a.user}:@127.0.0.1:${sshd.port}; ${script}`], { env: { PATH: "/usr/bin:/bin", HOME: a.dir }, cwd: a.dir }, { timeoutMs: 300_000 });

  const r = await lftp(`mirror -R ${src} tree`);
  succeeded(t, r, "lftp mirror -R");
  t.same(files(path.join(a.root, "tree")), files(src), "every file stored byte for byte");
  const before = snapshot(a.root);
  const again = await lftp(`mirror -R ${src} tree`);
  succeeded(t, again, "lftp mirror -R, again (nothing new)");
  t.same(snapshot(a.root), before, "the stored tree unchanged");
});
