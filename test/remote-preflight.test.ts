// What install-remote and check say ok to today while nothing can work (issue 17, item 3): a config
// that is not JSON, a root and state on two filesystems, an unrestricted key line seen only after
// applying, a key silently moved to another label or root, a schedule nothing runs. Through the
// real binary, on throwaway accounts; each refusal leaves everything as it was.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { snapshot } from "./helpers/env.js";
import { account, clientKey, vb, succeeded, type Account } from "./helpers/sshd.js";
import { cronRunning } from "../src/remote/runner.js";
import { systemdRunning } from "../src/remote/schedule.js";

const root = process.getuid?.() === 0;
if (!root) t.plan(0, "install-remote and check need root");

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const passwd = (a: Account) => spawnSync("getent", ["passwd", a.user], { encoding: "utf8" }).stdout;
const state = (a: Account) => ({ files: snapshot(a.dir), passwd: passwd(a) });

t.test("a config that is not JSON: check and install-remote say the same line and column, and install changes nothing", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote");
  const config = path.join(a.configDir, `${a.user}.json`);
  const text = fs.readFileSync(config, "utf8");
  // A trailing comma, as a hand edit leaves it: the last key's line ends in ',' before '}'.
  const broken = text.replace(/\n}\n$/, ',\n  "x": 1,\n}\n');
  fs.writeFileSync(config, broken);
  const line = broken.split("\n").length - 1;
  const said = `config ${config}: not valid JSON: line ${line}, column 1: expected a key after ',' (a trailing comma?)`;
  const check = await vb(["check", "--user", a.user, ...a.schedule]);
  t.equal(check.code, 1, "check fails");
  t.match(check.stdout.toString(), `: ${said}`, "check names the line and column");
  t.match(check.stdout.toString(), `fix: correct ${config}, or remove it and run validate-backup install-remote again`);
  const before = state(a);
  for (const dry of [["--dry-run"], []]) {
    const r = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, ...dry]);
    t.equal(r.code, 2, `install-remote ${dry.join("")} refuses`);
    t.match(r.stderr, said, "with the same words as check");
  }
  t.same(state(a), before, "nothing was changed");
  // The gate itself gives the same reason to the client.
  const gate = await vb(["--config", config], undefined);
  t.not(gate.code, 0);
  t.match(gate.stderr, said, "and so does the gate");
});

t.test("root and state on different filesystems: install-remote refuses, check reports it", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  const mounts: string[] = [];
  const mount = (dir: string) => {
    fs.mkdirSync(dir, { recursive: true });
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", dir], { encoding: "utf8" });
    if (m.status !== 0) return m.stderr.trim() || "mount failed";
    mounts.unshift(dir);
    return null;
  };
  const umountAll = () => {
    for (const d of mounts.splice(0)) if (spawnSync("umount", [d]).status !== 0) spawnSync("umount", ["-l", d]);
  };
  try {
    const why = mount(a.root);
    if (why) {
      t.comment(`skipped: cannot mount a tmpfs here: ${why}`);
      return;
    }
    const before = state(a);
    for (const dry of [["--dry-run"], []]) {
      const r = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, ...dry]);
      t.equal(r.code, 2, `install-remote ${dry.join("")} refuses a root that is a mount point`);
      t.match(r.stderr, `the backup root ${a.root} and its state ${a.root}.state are on different filesystems (${a.root} is a mount point)`);
      t.match(r.stderr, /link\(2\), which cannot cross filesystems: every session would be refused\. Nothing was changed\. Fix: mount the filesystem at /);
    }
    t.same(state(a), before, "no account, no file made");
    umountAll();
    succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote on one filesystem");
    // The state replaced by a mount afterwards (a disk mounted there by hand): check sees it.
    t.equal(mount(`${a.root}.state`), null, "a tmpfs over the state");
    const check = await vb(["check", "--user", a.user, ...a.schedule]);
    t.equal(check.code, 1, "check fails");
    t.match(check.stdout.toString(), new RegExp(`DEVIATION: \\[${a.user}\\] the backup root ${esc(a.root)} and its state ${esc(a.root)}\\.state are on different filesystems \\(${esc(a.root)}\\.state is a mount point\\): `));
  } finally {
    umountAll();
  }
});

t.test("an existing key line without the gate is reported before anything is applied, at --dry-run too", async (t) => {
  const a = account(t);
  const k1 = clientKey(a.dir, "k1");
  const k2 = clientKey(a.dir, "k2");
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${k1}.pub`]), "install-remote");
  const ak = path.join(a.home, ".ssh/authorized_keys");
  fs.appendFileSync(ak, fs.readFileSync(`${k2}.pub`, "utf8"));
  const before = state(a);
  const dry = await vb(["install-remote", ...a.args, "--key", `${k1}.pub`, "--dry-run"]);
  t.equal(dry.code, 0, "the dry run plans");
  const out = dry.stdout.toString();
  t.match(out, new RegExp(`^DEVIATION: ${esc(ak)} line 2 \\(ssh-ed25519 …\\S+ vbt@source-k2\\): does not force validate-backup`, "m"), "the unforced line");
  t.match(out, /^DEVIATION: .* line 2 .*lacks 'restrict'/m, "and unrestricted");
  t.notMatch(out, /line 1 \(/, "the key being installed is not reported (its line is replaced)");
  t.ok(out.indexOf("DEVIATION") < out.indexOf("\n["), "said before the plan's steps");
  t.same(state(a), before, "the dry run changed nothing");
});

t.test("a key moved to another label or root: said, refused, and done with --rebind", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote");
  const ak = path.join(a.home, ".ssh/authorized_keys");
  const config = path.join(a.configDir, `${a.user}.json`);
  const root2 = path.join(a.dir, "backup2", "root");
  const elsewhere = a.args.map((x) => (x === a.root ? root2 : x));
  let before = state(a);

  // The same key under another label (and root).
  const moved = ["install-remote", ...elsewhere, "--key", `${key}.pub`, "--label", "other"];
  const r = await vb(moved);
  t.equal(r.code, 2, "refused without --rebind");
  t.match(r.stderr, `this key is installed as '${a.user}' (${config}, root ${a.root}); it would be moved to 'other' (root ${root2})`);
  t.match(r.stderr, /Give --rebind to move it/);
  // The same label to another root.
  const r2 = await vb(["install-remote", ...elsewhere, "--key", `${key}.pub`]);
  t.equal(r2.code, 2, "a new root for the label: refused without --rebind");
  t.match(r2.stderr, `the label '${a.user}' (${config}) has the root ${a.root}; every key of it would be moved to ${root2}`);
  t.same(state(a), before, "nothing was changed");
  // A config the schema refuses in a setting install-remote rewrites anyway (its access): the root it
  // names is still the label's, and moving it still needs --rebind.
  const good = fs.readFileSync(config);
  fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(good.toString()), access: "append-only-please" }));
  const edited = state(a);
  const r3 = await vb(["install-remote", ...elsewhere, "--key", `${key}.pub`]);
  t.equal(r3.code, 2, "a config the schema refuses: a new root is still refused without --rebind");
  t.match(r3.stderr, `the label '${a.user}' (${config}) has the root ${a.root}; every key of it would be moved to ${root2}`);
  t.same(state(a), edited, "nothing was changed, the config neither");
  t.notOk(fs.existsSync(root2), "no new root");
  fs.writeFileSync(config, good);
  before = state(a); // the same bytes again, with a new mtime

  const dry = await vb([...moved, "--rebind", "--dry-run"]);
  succeeded(t, dry, "--rebind --dry-run");
  t.match(dry.stdout.toString(), /^rebinding \(--rebind\): this key is installed as /m, "the dry run says what --rebind does");
  t.same(state(a), before, "and changes nothing");

  const done = await vb([...moved, "--rebind"]);
  succeeded(t, done, "install-remote --rebind");
  t.match(fs.readFileSync(ak, "utf8"), new RegExp(`^command="\\S+ --config ${esc(path.join(a.configDir, "other.json"))}",restrict ssh-ed25519 `), "the key's line now forces the new label");
  t.equal(fs.readFileSync(ak, "utf8").trim().split("\n").length, 1, "one line for the key");
  t.ok(fs.existsSync(a.root), "the old backups stay");
  // Asked again, the key is where it was put: nothing to rebind.
  succeeded(t, await vb(["install-remote", ...elsewhere, "--key", `${key}.pub`, "--label", "other", "--dry-run"]), "the same again needs no --rebind");
});

t.test("a schedule nothing runs: cron.d without a cron daemon, timers without systemd", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote");
  const custom = await vb(["check", "--user", a.user, ...a.schedule]);
  succeeded(t, custom, "check with the schedule in a directory of its own");
  t.match(custom.stdout.toString(), new RegExp(`warning: the housekeeping schedule is in ${esc(a.scheduleDir)}, which cron does not read \\(it reads /etc/cron\\.d\\)`), "a directory cron does not read is said");

  // Where cron reads: read by check, never written by this test.
  const cronD = ["--schedule", "cron", "--schedule-dir", "/etc/cron.d"];
  const noCron = /DEVIATION: no cron daemon runs here \(no root process named cron or crond.*\): \/etc\/cron\.d\/validate-backup-vbt-\w+ would never run: no seal, no prune, no recorded audit head/;
  if (cronRunning()) t.comment("a cron daemon runs on this host: its absence is not tested here");
  else {
    const r = await vb(["check", "--user", a.user, ...cronD]);
    t.equal(r.code, 1, "check fails");
    t.match(r.stdout.toString(), noCron, "no cron daemon: said");
    const dry = await vb(["install-remote", ...a.args.slice(0, -cronD.length), ...cronD, "--key", `${key}.pub`, "--dry-run"]);
    t.equal(dry.code, 0);
    t.match(dry.stdout.toString(), noCron, "install-remote's plan says it too, before anything is written");
  }
  // A cron daemon (a root process named cron): the same check no longer says so.
  const fake = path.join(a.dir, "cron");
  fs.copyFileSync("/usr/bin/sleep", fake);
  fs.chmodSync(fake, 0o755);
  const daemon = spawn(fake, ["600"], { stdio: "ignore" });
  try {
    const r = await vb(["check", "--user", a.user, ...cronD]);
    t.notMatch(r.stdout.toString(), /no cron daemon runs here/, "with a cron running, nothing said");
    t.match(r.stdout.toString(), /DEVIATION: create \/etc\/cron\.d\/validate-backup-vbt-\w+ /, "only the missing file");
  } finally {
    daemon.kill("SIGKILL");
  }

  if (systemdRunning()) t.comment("systemd runs on this host: its absence is not tested here");
  else {
    const r = await vb(["check", "--user", a.user, "--schedule", "systemd", "--schedule-dir", "/etc/systemd/system"]);
    t.equal(r.code, 1, "check fails");
    t.match(r.stdout.toString(), /DEVIATION: systemd does not run here \(no \/run\/systemd\/system\): the timers \/etc\/systemd\/system\/validate-backup-vbt-\w+\.timer would never fire/);
    t.match(r.stdout.toString(), /fix: --schedule cron \(with a running cron daemon\)/);
  }
});
