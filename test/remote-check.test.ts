// check on a clean install passes; each layout fault of attacks.md item 36 (and its relatives),
// planted one at a time and undone after, is reported with its fix and makes check exit 1.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { TOP } from "./helpers/env.js";
import { account, clientKey, vb, succeeded, programCopy } from "./helpers/sshd.js";
import { sample, FULL_ONLY } from "./helpers/scale.js";

const root = process.getuid?.() === 0;
if (!root) t.plan(0, "check needs root");

const a = account(t);
const key = clientKey(a.dir);
const ak = path.join(a.home, ".ssh/authorized_keys");
const config = path.join(a.configDir, `${a.user}.json`);
const log = path.join(a.logDir, `${a.user}.log`);
const cron = path.join(a.scheduleDir, `validate-backup-${a.user}`);
// The program's own faults are planted in a copy: chmod of the shared launcher made remote-install,
// running beside this file, fail.
const program = root ? programCopy(a.dir) : TOP;
const vbCopy = (args: string[]) => vb(args, undefined, program);

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
}

function ids(): { uid: number; gid: number } {
  const f = spawnSync("getent", ["passwd", a.user], { encoding: "utf8" }).stdout.split(":");
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** Set a mode for the duration of fn, whatever happens. */
function chmodFor(p: string, mode: number): () => void {
  const old = fs.lstatSync(p).mode & 0o7777;
  fs.chmodSync(p, mode);
  return () => fs.chmodSync(p, old);
}
function chownFor(p: string, uid: number): () => void {
  const st = fs.lstatSync(p);
  fs.lchownSync(p, uid, st.gid);
  return () => fs.lchownSync(p, st.uid, st.gid);
}

// [name, plant (returns the undo), what the report must say]
const FAULTS: [string, () => () => void, RegExp][] = [
  ["$HOME owned by the account", () => chownFor(a.home, ids().uid), new RegExp(`${a.home}: owner \\d+:\\d+ -> root:${a.user}`)],
  [".ssh owned by the account", () => chownFor(path.join(a.home, ".ssh"), ids().uid), /\.ssh: owner \d+:\d+ -> root:root/],
  [
    "a ~/.bashrc the account owns",
    () => {
      const p = path.join(a.home, ".bashrc");
      fs.writeFileSync(p, "exec sh\n");
      fs.chownSync(p, ids().uid, ids().gid);
      return () => fs.rmSync(p);
    },
    /\.bashrc: owner \d+:\d+ mode 0644, writable by the account/,
  ],
  [
    "a world-writable ~/.profile",
    () => {
      const p = path.join(a.home, ".profile");
      fs.writeFileSync(p, "");
      fs.chmodSync(p, 0o666);
      return () => fs.rmSync(p);
    },
    /\.profile: owner 0:0 mode 0666, writable by the account/,
  ],
  ["a group-writable parent of authorized_keys", () => chmodFor(path.join(a.home, ".ssh"), 0o775), /\.ssh: mode 0775 -> 0755/],
  ["a world-writable parent of authorized_keys", () => chmodFor(path.join(a.home, ".ssh"), 0o757), /\.ssh: mode 0757 -> 0755/],
  ["a group-writable $HOME", () => chmodFor(a.home, 0o770), /home: mode 0770 -> 0750/],
  [
    "a key line without restrict",
    () => {
      const old = fs.readFileSync(ak, "utf8");
      fs.writeFileSync(ak, old.replace(",restrict", ""));
      return () => fs.writeFileSync(ak, old);
    },
    /authorized_keys line 1 .*lacks 'restrict'/,
  ],
  [
    "a key line that re-opens a terminal",
    () => {
      const old = fs.readFileSync(ak, "utf8");
      fs.writeFileSync(ak, old.replace(",restrict", ",restrict,pty"));
      return () => fs.writeFileSync(ak, old);
    },
    /line 1 .*carries pty/,
  ],
  [
    "a second key without the gate",
    () => {
      const old = fs.readFileSync(ak, "utf8");
      fs.appendFileSync(ak, fs.readFileSync(`${key}.pub`, "utf8").replace("vbt@", "other@"));
      return () => fs.writeFileSync(ak, old);
    },
    /line 2 .*does not force validate-backup/,
  ],
  ["authorized_keys writable by the account", () => chownFor(ak, ids().uid), /authorized_keys: owner \d+:0 -> root:root/],
  ["the config writable by the account", () => chownFor(config, ids().uid), /\.json: owner \d+:0 -> root:root/],
  ["the config world-writable", () => chmodFor(config, 0o666), /\.json: mode 0666 -> 0644/],
  ["the launcher writable by others", () => chmodFor(path.join(program, "bin/validate-backup"), 0o757), /bin\/validate-backup: owner 0:0 mode 0757, writable by the account/],
  ["a loaded file writable by others", () => chmodFor(path.join(program, "node_modules/zod/package.json"), 0o666), /zod\/package\.json: owner 0:0 mode 0666, writable by the account/],
  ["the account's login shell is bash", () => (sh(["usermod", "--shell", "/bin/bash", a.user]), () => sh(["usermod", "--shell", "/bin/sh", a.user])), /login shell of vbt-\w+: \/bin\/bash -> \/bin\/sh/],
  ["the account has a password", () => (sh(["usermod", "--password", "$6$x$y", a.user]), () => sh(["usermod", "--password", "*", a.user])), /has a password/],
  ["the audit log is not append-only", () => (sh(["chattr", "-a", log]), () => sh(["chattr", "+a", log])), /\.log: append-only \(chattr \+a\)/],
  ["the backup root's parent is world-writable", () => chmodFor(path.dirname(a.root), 0o777), /backup: .*could rename what is in it/],
  ["the backup root is world-readable", () => chmodFor(a.root, 0o3775), /root: mode 3775 -> 3770/],
  [
    "the housekeeping schedule edited",
    () => {
      const old = fs.readFileSync(cron, "utf8");
      fs.writeFileSync(cron, old.replace(/ prune --config (\S+)/, " prune --config $1 --keep-full 1"));
      return () => fs.writeFileSync(cron, old);
    },
    /rewrite \S+\/validate-backup-vbt-\w+ root:root 0644: line \d+ is '.* prune .*--keep-full 1 .*', expected '.* prune --config \S+ >\/dev\/null' \(.*housekeeping/,
  ],
  [
    "the housekeeping schedule removed",
    () => {
      const old = fs.readFileSync(cron, "utf8");
      fs.rmSync(cron);
      return () => fs.writeFileSync(cron, old, { mode: 0o644 });
    },
    /create \S+\/cron\.d\/validate-backup-vbt-\w+ root:root 0644 \(.*housekeeping: seal, prune/,
  ],
  [
    "the weekly verify --stored taken out of the schedule",
    () => {
      const old = fs.readFileSync(cron, "utf8");
      fs.writeFileSync(cron, old.replace(/^\d.* verify --stored .*\n/m, ""));
      return () => fs.writeFileSync(cron, old);
    },
    /rewrite \S+\/validate-backup-vbt-\w+ root:root 0644: line \d+ is .*, expected '.* verify --stored --config .*' \(.*verify --stored/,
  ],
  [
    "~/.ssh/rc exists",
    () => {
      const p = path.join(a.home, ".ssh/rc");
      fs.writeFileSync(p, "");
      return () => fs.rmSync(p);
    },
    /\.ssh\/rc exists/,
  ],
];

t.test("check on a clean install passes, then reports each planted fault", async (t) => {
  const inst = await vbCopy(["install-remote", ...a.args, "--key", `${key}.pub`]);
  succeeded(t, inst, "install-remote");
  const clean = await vbCopy(["check", "--user", a.user, ...a.schedule]);
  succeeded(t, clean, "check of a clean install");
  t.match(clean.stdout.toString(), /check vbt-\w+: ok/);
  for (const [name, plant, expect] of sample(FAULTS, 5)) {
    const undo = plant();
    try {
      const r = await vbCopy(["check", "--user", a.user, ...a.schedule]);
      const out = r.stdout.toString();
      t.equal(r.code, 1, `${name}: check fails`);
      t.match(out, new RegExp(`DEVIATION: .*${expect.source}`), `${name}: reported`);
      t.match(out, /\n {4}fix: \S/, `${name}: with a fix`);
    } finally {
      undo();
    }
  }
  const after = await vbCopy(["check", "--user", a.user, ...a.schedule]);
  succeeded(t, after, "check with every fault undone");
});

t.test("install-remote repairs what check reports", FULL_ONLY, async (t) => {
  fs.chownSync(a.home, ids().uid, ids().gid);
  fs.chmodSync(path.join(a.home, ".ssh"), 0o777);
  const bad = await vbCopy(["check", "--user", a.user, ...a.schedule]);
  t.equal(bad.code, 1);
  const fix = await vbCopy(["install-remote", ...a.args, "--key", `${key}.pub`]);
  succeeded(t, fix, "install-remote repairs");
  t.match(fix.stdout.toString(), /^2 change\(s\) made/m);
  t.equal((await vbCopy(["check", "--user", a.user, ...a.schedule])).code, 0);
});

t.test("check of an unknown account fails; of nobody's name, refuses", async (t) => {
  const r = await vbCopy(["check", "--user", "vbt-nosuchuser"]);
  t.equal(r.code, 1);
  t.match(r.stdout.toString(), /account vbt-nosuchuser does not exist/);
  const u = await vbCopy(["check"]);
  t.equal(u.code, 2);
  t.match(u.stderr, /--user is required/);
});
