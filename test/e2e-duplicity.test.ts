// duplicity 0.8 with GnuPG encryption and signing, through a real sshd and the installed key, with
// each backend that runs over our protocols: full, incremental, collection-status, verify, a
// byte-identical restore; after a second full, the removals duplicity asks for remove nothing.
// Two REMOTE accounts (N=2) each receive the same backup.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { run, snapshot, type RunResult } from "./helpers/env.js";
import { haveSshd, startSshd, account, clientKey, vb, succeeded, type Account, type Sshd } from "./helpers/sshd.js";

const DUPLICITY = "/usr/bin/duplicity";
if (!haveSshd || !fs.existsSync(DUPLICITY) || !fs.existsSync("/usr/bin/gpg")) t.plan(0, "needs root, sshd, duplicity and gpg");

// Backends whose protocol is still being built elsewhere carry the reason, and run as todo.
// Not yet seen green: the machine was too loaded to finish a run in the session that wrote this.
const UNPROVEN = "not yet seen passing end to end; enable after a green run";
const BACKENDS: [scheme: string, todo: string | false][] = [
  ["sftp", UNPROVEN],
  ["pexpect+sftp", UNPROVEN],
  ["pexpect+scp", UNPROVEN],
  ["paramiko+scp", UNPROVEN],
  ["rsync", UNPROVEN],
];

interface Source {
  dir: string;
  data: string;
  gnupg: string;
  fpr: string;
  key: string;
}

function makeSource(dir: string): Source {
  const gnupg = path.join(dir, "gnupg");
  fs.mkdirSync(gnupg, { mode: 0o700 });
  const env = { ...process.env, GNUPGHOME: gnupg };
  // future-default: ed25519 signing + cv25519 encryption, generated in a blink.
  const gen = spawnSync("/usr/bin/gpg", ["--batch", "--passphrase", "", "--quick-gen-key", "vbt backup <vbt@source.invalid>", "future-default", "default", "never"], { env, encoding: "utf8" });
  if (gen.status !== 0) throw new Error(gen.stderr);
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(spawnSync("/usr/bin/gpg", ["--with-colons", "--list-secret-keys"], { env, encoding: "utf8" }).stdout)![1]!;
  const data = path.join(dir, "data");
  fs.mkdirSync(path.join(data, "sub"), { recursive: true });
  fs.writeFileSync(path.join(data, "a.bin"), crypto.randomBytes(300_000));
  fs.writeFileSync(path.join(data, "sub", "b.txt"), "first version\n");
  fs.writeFileSync(path.join(data, "sub", "c.bin"), crypto.randomBytes(40_000));
  return { dir, data, gnupg, fpr, key: clientKey(dir) };
}

function duplicity(src: Source, sshd: Sshd, name: string, args: string[]): Promise<RunResult> {
  const sshOptions = `-oIdentityFile=${src.key} -oUserKnownHostsFile=${sshd.knownHosts} -oIdentitiesOnly=yes -oStrictHostKeyChecking=yes -oLogLevel=ERROR`;
  const argv = [
    DUPLICITY,
    ...args,
    "--encrypt-key", src.fpr,
    "--sign-key", src.fpr,
    "--gpg-options", "--pinentry-mode=loopback",
    "--archive-dir", path.join(src.dir, "cache"),
    "--name", name,
    "--num-retries", "1",
    "--ssh-options", sshOptions,
    "--tempdir", path.join(src.dir, "tmp"),
  ];
  fs.mkdirSync(path.join(src.dir, "tmp"), { recursive: true });
  const env = { PATH: "/usr/bin:/bin", HOME: src.dir, GNUPGHOME: src.gnupg, PASSPHRASE: "", SIGN_PASSPHRASE: "", LANG: "C.UTF-8" };
  return run(argv, { env }, { timeoutMs: 180_000 });
}

function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string, rel: string) => {
    for (const n of fs.readdirSync(p).sort()) {
      const q = path.join(p, n);
      if (fs.lstatSync(q).isDirectory()) walk(q, `${rel}${n}/`);
      else out[rel + n] = crypto.createHash("sha256").update(fs.readFileSync(q)).digest("hex");
    }
  };
  walk(dir, "");
  return out;
}

function url(scheme: string, a: Account, sshd: Sshd, sub: string): string {
  return `${scheme}://${a.user}@127.0.0.1:${sshd.port}/${a.root}/${sub}`;
}

async function install(t: Test, a: Account, src: Source, sshd: Sshd) {
  const r = await vb(["install-remote", ...a.args, "--key", `${src.key}.pub`, "--sshd-config", sshd.config]);
  succeeded(t, r, "install-remote");
}

t.test("duplicity through the gate", async (t) => {
  const sshd = await startSshd(t);
  const a = account(t, { prefix: "d" });
  const src = makeSource(a.dir);
  await install(t, a, src, sshd);

  for (const [scheme, todo] of BACKENDS) {
    await t.test(`${scheme}://`, { todo }, async (t) => {
      const sub = scheme.replace(/\W/g, "-");
      const target = url(scheme, a, sshd, sub);
      // paramiko+scp and rsync do not create the target directory themselves.
      fs.mkdirSync(path.join(a.root, sub), { mode: 0o750 });
      const { uid, gid } = fs.statSync(`${a.root}.state`);
      fs.chownSync(path.join(a.root, sub), uid, gid);
      fs.writeFileSync(path.join(src.data, "sub", "b.txt"), "first version\n");
      succeeded(t, await duplicity(src, sshd, sub, ["full", src.data, target]), "full");
      fs.writeFileSync(path.join(src.data, "sub", "b.txt"), `second version ${scheme}\n`);
      fs.writeFileSync(path.join(src.data, "new.bin"), crypto.randomBytes(10_000));
      succeeded(t, await duplicity(src, sshd, sub, ["incremental", src.data, target]), "incremental");
      const status = await duplicity(src, sshd, sub, ["collection-status", target]);
      succeeded(t, status, "collection-status");
      t.match(status.stdout.toString(), /Incremental/);
      succeeded(t, await duplicity(src, sshd, sub, ["verify", target, src.data]), "verify");
      const restored = path.join(a.dir, `restore-${sub}`);
      succeeded(t, await duplicity(src, sshd, sub, ["restore", target, restored]), "restore");
      t.same(tree(restored), tree(src.data), "restored byte-identical");
      for (const f of fs.readdirSync(path.join(a.root, sub))) t.match(f, /\.gpg$|^duplicity-.*\.manifest\.gpg$/, `${f}: only encrypted files on REMOTE`);

      succeeded(t, await duplicity(src, sshd, sub, ["full", src.data, target]), "second full");
      const before = snapshot(path.join(a.root, sub));
      await duplicity(src, sshd, sub, ["remove-all-but-n-full", "1", "--force", target]);
      await duplicity(src, sshd, sub, ["cleanup", "--force", target]);
      t.same(snapshot(path.join(a.root, sub)), before, "remove-all-but-n-full and cleanup removed nothing");
      fs.rmSync(restored, { recursive: true, force: true });
    });
  }

  await t.test("two REMOTE accounts (N=2) each receive the same backup", { todo: BACKENDS[0]![1] }, async (t) => {
    const b = account(t, { prefix: "n" });
    await install(t, b, src, sshd);
    fs.writeFileSync(path.join(src.data, "sub", "b.txt"), "for both\n");
    for (const acct of [a, b]) {
      const target = url("sftp", acct, sshd, "n2");
      succeeded(t, await duplicity(src, sshd, `n2-${acct.user}`, ["full", src.data, target]), `full to ${acct.user}`);
      const restored = path.join(a.dir, `restore-n2-${acct.user}`);
      succeeded(t, await duplicity(src, sshd, `n2-${acct.user}`, ["restore", target, restored]), `restore from ${acct.user}`);
      t.same(tree(restored), tree(src.data), `${acct.user}: restored byte-identical`);
    }
  });
});
