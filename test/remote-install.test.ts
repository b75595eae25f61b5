// install-remote on throwaway accounts: owners and modes, idempotence, --dry-run, a second key,
// a careless pre-existing account repaired, and the refusals.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { snapshot, run, TOP, TEST_USER, gateIds } from "./helpers/env.js";
import { account, clientKey, vb, succeeded, type Account } from "./helpers/sshd.js";
import { FULL_ONLY } from "./helpers/scale.js";

// Each case installs a whole account (useradd, a node start per install and check): CI's quick
// scale keeps a fresh install, the cron schedule and the refusals.

const root = process.getuid?.() === 0;
if (!root) t.plan(0, "install-remote needs root");

function mode(p: string): string {
  const st = fs.lstatSync(p);
  return `${(st.mode & 0o7777).toString(8).padStart(4, "0")} ${st.uid === 0 ? "root" : "user"}:${st.gid === 0 ? "root" : "group"}`;
}

function ids(user: string): { uid: number; gid: number } {
  const f = spawnSync("getent", ["passwd", user], { encoding: "utf8" }).stdout.split(":");
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function layoutSnap(a: Account): Record<string, string> {
  return { ...snapshot(a.dir), passwd: spawnSync("getent", ["passwd", a.user], { encoding: "utf8" }).stdout, shadow: spawnSync("getent", ["shadow", a.user], { encoding: "utf8" }).stdout.split(":")[1] ?? "" };
}

async function install(t: Test, a: Account, extra: string[], expectExit = 0) {
  const r = await vb(["install-remote", ...a.args, ...extra]);
  if (expectExit === 0) succeeded(t, r, `install-remote ${extra.join(" ")}`);
  else t.equal(r.code, expectExit, "install-remote applied its plan, and its closing check reports what it may not fix");
  return r.stdout.toString();
}

t.test("a fresh account: owners, modes, key line, no password; the second run changes nothing", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  const out = await install(t, a, ["--key", `${key}.pub`, "--from", "127.0.0.1,::1"]);
  t.match(out, /check vbt-\w+: ok/);
  const { uid, gid } = ids(a.user);
  t.ok(uid > 0 && gid > 0);
  t.equal(mode(a.home), "0750 root:group");
  t.equal(fs.statSync(a.home).gid, gid);
  t.equal(mode(path.join(a.home, ".ssh")), "0755 root:root");
  t.equal(mode(path.join(a.home, ".ssh/authorized_keys")), "0644 root:root");
  const config = path.join(a.configDir, `${a.user}.json`);
  t.equal(mode(config), "0644 root:root");
  t.equal(mode(a.root), "3770 root:group");
  t.equal(fs.statSync(a.root).gid, gid);
  t.equal(mode(`${a.root}.state`), "0700 user:group");
  t.equal(fs.statSync(`${a.root}.state`).uid, uid);
  const log = path.join(a.logDir, `${a.user}.log`);
  t.equal(mode(log), "0660 root:group");
  t.match(spawnSync("lsattr", ["-d", log], { encoding: "utf8" }).stdout, /^\S*a\S* /, "audit log is append-only");
  t.equal(mode(path.dirname(a.root)), "0755 root:root", "missing parents are made root's");
  const line = fs.readFileSync(path.join(a.home, ".ssh/authorized_keys"), "utf8");
  t.equal(line, `command="${TOP}/bin/validate-backup --config ${config}",restrict,from="127.0.0.1,::1" ${fs.readFileSync(`${key}.pub`, "utf8").trim()}\n`);
  t.match(JSON.parse(fs.readFileSync(config, "utf8")), { label: a.user, root: a.root, state: `${a.root}.state`, access: "append-only", audit: { file: log } });
  const pw = spawnSync("getent", ["passwd", a.user], { encoding: "utf8" }).stdout.trim().split(":");
  t.equal(pw[6], "/bin/sh");
  t.equal(pw[5], a.home);
  t.equal(spawnSync("getent", ["shadow", a.user], { encoding: "utf8" }).stdout.split(":")[1], "*", "no password at all");

  const before = layoutSnap(a);
  const again = await install(t, a, ["--key", `${key}.pub`, "--from", "127.0.0.1,::1"]);
  t.match(again, /^0 change\(s\) made/m);
  t.notMatch(again, /^\[\+\]/m);
  t.same(layoutSnap(a), before, "the second run touched nothing");
});

t.test("--dry-run changes nothing, before and after an install", FULL_ONLY, async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  const before = snapshot(a.dir);
  const r = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, "--dry-run"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.toString(), /create system account/);
  t.match(r.stdout.toString(), /[1-9]\d* change\(s\) planned/);
  t.equal(spawnSync("getent", ["passwd", a.user]).status, 2, "no account made");
  t.same(snapshot(a.dir), before, "no file made");
  await install(t, a, ["--key", `${key}.pub`]);
  const installed = layoutSnap(a);
  const dry = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, "--dry-run", "--access", "read-only"]);
  t.equal(dry.code, 0);
  t.match(dry.stdout.toString(), /rewrite .*\.json/, "the dry run sees the config would change");
  t.same(layoutSnap(a), installed, "and changes nothing");
});

t.test("a second key: its own root, config and log; the same key again is replaced, not added", FULL_ONLY, async (t) => {
  const a = account(t);
  const k1 = clientKey(a.dir, "k1");
  const k2 = clientKey(a.dir, "k2");
  await install(t, a, ["--key", `${k1}.pub`]);
  const root2 = path.join(a.dir, "backup2", "root");
  const args2 = a.args.map((x) => (x === a.root ? root2 : x));
  const out = (await vb(["install-remote", ...args2, "--key", `${k2}.pub`, "--label", "second", "--access", "read-only"])).stdout.toString();
  t.match(out, /check vbt-\w+: ok/);
  const ak = () => fs.readFileSync(path.join(a.home, ".ssh/authorized_keys"), "utf8").trim().split("\n");
  t.equal(ak().length, 2);
  t.match(ak()[1], /--config \S+\/second\.json",restrict ssh-ed25519 /);
  t.match(JSON.parse(fs.readFileSync(path.join(a.configDir, "second.json"), "utf8")), { root: root2, access: "read-only", audit: { file: path.join(a.logDir, "second.log") } });
  // A read-only key publishes nothing: its log records no hash, so no weekly verify --stored; and
  // its tree is SOURCE's own outgoing data, which root neither seals (chowns) nor prunes.
  const first = fs.readFileSync(path.join(a.scheduleDir, `validate-backup-${a.user}`), "utf8");
  t.match(first, / verify --stored --config /m);
  t.match(first, / seal --config .* prune --config /s);
  const second = fs.readFileSync(path.join(a.scheduleDir, "validate-backup-second"), "utf8");
  const lines = second.split("\n").filter((l) => !l.startsWith("#")).join("\n");
  t.notMatch(lines, /verify|seal|prune/, "the pull key: no seal, no prune, no verify --stored");
  t.match(second, /^\d+ \* \* \* \* root \S+ audit --record-head --file \S+second\.log >\/dev\/null; \S+ notify --config \S+second\.json >\/dev\/null; \S+ metrics --config-dir \S+ >\/dev\/null$/m, "only the log's head, then notify and metrics, hourly");
  t.equal(mode(root2), "3770 root:group");
  // The first key again, now from one address: its line changes in place.
  const again = (await vb(["install-remote", ...a.args, "--key", `${k1}.pub`, "--from", "10.0.0.1"])).stdout.toString();
  t.match(again, /rewrite .*authorized_keys/);
  t.equal(ak().length, 2);
  t.match(ak()[0], /,restrict,from="10\.0\.0\.1" ssh-ed25519 /);
});

t.test("roots do not nest: a second key's root or state inside, around or at the first key's is refused, naming it", async (t) => {
  const a = account(t);
  const k1 = clientKey(a.dir, "k1");
  const k2 = clientKey(a.dir, "k2");
  await install(t, a, ["--key", `${k1}.pub`]);
  const before = layoutSnap(a);
  const config1 = path.join(a.configDir, `${a.user}.json`);
  const withRoot = (root: string) => a.args.map((x) => (x === a.root ? root : x));
  for (const [root, how] of [
    [path.join(a.root, "inner"), `--root ${path.join(a.root, "inner")} lies inside the root ${a.root}`],
    [path.dirname(a.root), `--root ${path.dirname(a.root)} contains the root ${a.root}`],
    [a.root, `--root ${a.root} is the root ${a.root}`],
    [path.join(`${a.root}.state`, "x"), `--root ${path.join(`${a.root}.state`, "x")} lies inside the state ${a.root}.state`],
  ] as const) {
    const r = await vb(["install-remote", ...withRoot(root), "--key", `${k2}.pub`, "--label", "second"]);
    t.equal(r.code, 2, `${root}: refused`);
    t.match(r.stderr, `${how} of the key '${a.user}' (${config1}): roots and states of two keys must not nest`);
  }
  t.same(layoutSnap(a), before, "nothing was changed");
  // Whole components: .../root2 is beside .../root, not inside it.
  const beside = await vb(["install-remote", ...withRoot(`${a.root}2`), "--key", `${k2}.pub`, "--label", "second", "--dry-run"]);
  succeeded(t, beside, "a root beside the first one is planned");
  // The first key again (its own config is not another key's) is not refused.
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${k1}.pub`, "--dry-run"]), "the same key again");
});

t.test("a careless existing account is repaired: owned home, dotfiles, shell, password, stray links", FULL_ONLY, async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  fs.mkdirSync(path.dirname(a.home), { recursive: true });
  t.equal(spawnSync("useradd", ["--create-home", "--home-dir", a.home, "--shell", "/bin/bash", "--password", "$6$salt$abcdefghijklmnop", a.user]).status, 0);
  const { uid, gid } = ids(a.user);
  fs.writeFileSync(path.join(a.home, ".bashrc"), "echo pwned\n");
  fs.chownSync(path.join(a.home, ".bashrc"), uid, gid);
  fs.mkdirSync(path.join(a.home, ".ssh"), { mode: 0o700 });
  fs.writeFileSync(path.join(a.home, ".ssh/authorized_keys"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldOldOldOldOldOldOldOldOldOldOldOldOldOldOld admin@laptop\n");
  fs.chownSync(path.join(a.home, ".ssh"), uid, gid);
  fs.symlinkSync("/etc/shadow", path.join(a.home, "link"));
  // The admin's own unforced key line is kept (install never drops a line): check flags it, exit 1.
  const out = await install(t, a, ["--key", `${key}.pub`], 1);
  t.equal(mode(a.home), "0750 root:group");
  t.equal(mode(path.join(a.home, ".bashrc")), "0644 root:root");
  t.equal(mode(path.join(a.home, ".ssh")), "0755 root:root");
  t.notOk(fs.existsSync(path.join(a.home, "link")), "the planted link is gone");
  t.equal(fs.readFileSync("/etc/shadow").length > 0, true, "and root never followed it");
  const pw = spawnSync("getent", ["passwd", a.user], { encoding: "utf8" }).stdout.trim().split(":");
  t.equal(pw[6], "/bin/sh");
  t.equal(spawnSync("getent", ["shadow", a.user], { encoding: "utf8" }).stdout.split(":")[1], "*");
  // The admin's old line is kept (install never drops a line), and check says what is wrong with it.
  const lines = fs.readFileSync(path.join(a.home, ".ssh/authorized_keys"), "utf8").trim().split("\n");
  t.equal(lines.length, 2);
  t.match(out, /DEVIATION: .*authorized_keys line 1 .*does not force validate-backup/);
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

t.test("the housekeeping schedule from cron: root's file runs seal, prune, record-head and the weekly verify --stored; check sees an edit", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  // '.' and '@' are not allowed in a cron.d file name: the label's become '-'.
  const label = "host1.example@b";
  const out = await install(t, a, ["--key", `${key}.pub`, "--label", label, "--keep-full", "3", "--retention-days", "45", "--quota", "500G"]);
  t.match(out, /the key's policy \(quota 500\.0 GiB\)/, "the plan says the quota");
  t.match(out, new RegExp(`^key ${esc(label)}: quota 500\\.0 GiB \\(limits\\.maxStoredBytes\\)$`, "m"), "check shows it");
  const file = path.join(a.scheduleDir, "validate-backup-host1-example-b");
  t.equal(mode(a.scheduleDir), "0755 root:root");
  t.equal(mode(file), "0644 root:root");
  const config = path.join(a.configDir, `${label}.json`);
  const log = path.join(a.logDir, `${label}.log`);
  const bin = `${TOP}/bin/validate-backup`;
  t.match(JSON.parse(fs.readFileSync(config, "utf8")), { housekeeping: { keepFull: 3, retentionDays: 45 } }, "--keep-full and --retention-days are kept in the config");
  t.match(JSON.parse(fs.readFileSync(config, "utf8")), { limits: { maxStoredBytes: 500 * 1024 ** 3 } }, "--quota lands in limits.maxStoredBytes");
  const text = fs.readFileSync(file, "utf8");
  t.match(text, /^SHELL=\/bin\/sh\nPATH=\/usr\/sbin:\/usr\/bin:\/sbin:\/bin\n/m);
  const hourly = text.match(new RegExp(`^\\d{1,2} \\* \\* \\* \\* root (${esc(bin)} seal --config ${esc(config)} >/dev/null; ${esc(bin)} audit --record-head --file ${esc(log)} >/dev/null; ${esc(bin)} notify --config ${esc(config)} >/dev/null; ${esc(bin)} metrics --config-dir ${esc(a.configDir)} >/dev/null)$`, "m"));
  const daily = text.match(new RegExp(`^\\d{1,2} 4 \\* \\* \\* root (${esc(bin)} prune --config ${esc(config)} >/dev/null)$`, "m"));
  const weekly = text.match(new RegExp(`^(\\d{1,2}) 5 \\* \\* ([0-6]) root (${esc(bin)} verify --stored --config ${esc(config)} >/dev/null)$`, "m"));
  t.ok(hourly, "hourly: seal, record the audit head, then notify and metrics");
  t.ok(daily, "daily: prune, keeping the config's housekeeping.keepFull (3) full chains");
  t.ok(weekly, "weekly: verify --stored");
  t.equal(weekly?.[1], text.match(/^(\d{1,2}) \* \* \* \* /m)?.[1], "at the key's minute, on a weekday from its label");
  t.equal(text.split("\n").filter((l) => /^\d/.test(l)).length, 3, "and no other line runs anything");
  const before = layoutSnap(a);
  const again = await install(t, a, ["--key", `${key}.pub`, "--label", label]);
  t.match(again, /^0 change\(s\) made/m, "a second install changes nothing (the config keeps --keep-full 3)");
  t.same(layoutSnap(a), before);

  const ok = await vb(["check", "--user", a.user, ...a.schedule]);
  succeeded(t, ok, "check of the schedule");
  t.match(ok.stdout.toString(), `key '${label}': prune keeps 3 full chain(s) and removes nothing that arrived less than 45 day(s) ago (housekeeping.retentionDays)`, "check shows the retention floor");
  t.match(ok.stdout.toString(), /: quota 500\.0 GiB \(limits\.maxStoredBytes\)$/m, "check alone shows the quota too");
  fs.writeFileSync(file, text.replace(" seal --config", " seal --dry-run --config"));
  const edited = await vb(["check", "--user", a.user, ...a.schedule]);
  t.equal(edited.code, 1, "check fails on an edited schedule");
  t.match(edited.stdout.toString(), new RegExp(`DEVIATION: rewrite ${esc(file)} root:root 0644: line \\d+ is '.*seal --dry-run --config.*', expected '.*seal --config.*' \\(\\[${esc(label)}\\] housekeeping`));
  const elsewhere = await vb(["check", "--user", a.user, "--schedule", "cron", "--schedule-dir", path.join(a.dir, "nowhere")]);
  t.equal(elsewhere.code, 1, "and on a missing one");
  t.match(elsewhere.stdout.toString(), /DEVIATION: create \S+\/nowhere\/validate-backup-host1-example-b root:root 0644/);
  await install(t, a, ["--key", `${key}.pub`, "--label", label]);
  t.equal(fs.readFileSync(file, "utf8"), text, "install-remote puts the schedule back");
  // The lines as cron's /bin/sh runs them: the real subcommands accept these arguments.
  const sh = (cmd: string) => spawnSync("/bin/sh", ["-c", cmd.replace(/ >\/dev\/null/g, "")], { encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
  const h = sh(hourly![1]!);
  t.equal(h.status, 0, `the hourly line runs: ${h.stderr}`);
  t.match(h.stdout, /recorded: line \d+/);
  const p = sh(daily![1]!);
  t.ok(p.status === 0 || p.status === 5, `the daily line runs (5: nothing arrived yet): ${p.stderr}`);
  const w = sh(weekly![3]!);
  t.equal(w.status, 0, `the weekly line runs: ${w.stderr}`);
  t.match(w.stdout, /verify --stored: 0 entries found and judged .*: OK/);
  const after = await vb(["check", "--user", a.user, ...a.schedule]);
  // seal keeps the root's setgid bit (3770 from install-remote), so nothing for check to report.
  t.equal(after.code, 0, "check still passes after a scheduled run");
});

t.test("--schedule systemd: a oneshot service and an hourly timer, a weekly pair for verify --stored; not enabled here, and it says so", FULL_ONLY, async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  const units = path.join(a.dir, "units");
  const sys = ["--schedule", "systemd", "--schedule-dir", units];
  const args = [...a.args.slice(0, a.args.length - a.schedule.length), ...sys];
  const r = await vb(["install-remote", ...args, "--key", `${key}.pub`]);
  succeeded(t, r, "install-remote --schedule systemd");
  t.match(r.stdout.toString(), new RegExp(`! validate-backup-${a.user}\\.timer is in ${esc(units)}, where systemd does not look for units: not enabled`), "the skipped enable is stated");
  const config = path.join(a.configDir, `${a.user}.json`);
  const bin = `${TOP}/bin/validate-backup`;
  const service = fs.readFileSync(path.join(units, `validate-backup-${a.user}.service`), "utf8");
  const timer = fs.readFileSync(path.join(units, `validate-backup-${a.user}.timer`), "utf8");
  t.equal(mode(path.join(units, `validate-backup-${a.user}.service`)), "0644 root:root");
  t.equal(mode(path.join(units, `validate-backup-${a.user}.timer`)), "0644 root:root");
  t.same(
    service.split("\n").filter((l) => l.startsWith("ExecStart=")),
    [`ExecStart=${bin} hourly --config ${config}`],
    "one line: hourly runs seal, prune (the config's housekeeping.keepFull) and record-head, each even if one before failed",
  );
  t.match(service, /^\[Service\]\nType=oneshot\n/m);
  t.notMatch(service, /^User=/m, "as root");
  t.match(service, /^ProtectSystem=full$/m, "the backup lies outside /usr, /boot and /etc: they may be read-only");
  t.match(service, /^PrivateTmp=yes$/m);
  t.match(timer, /^\[Timer\]\nOnCalendar=hourly\n/m);
  t.match(timer, /^RandomizedDelaySec=\S+$/m);
  t.match(timer, /^Persistent=true$/m);
  t.match(timer, /^\[Install\]\nWantedBy=timers\.target$/m);
  const vservice = fs.readFileSync(path.join(units, `validate-backup-${a.user}-verify.service`), "utf8");
  const vtimer = fs.readFileSync(path.join(units, `validate-backup-${a.user}-verify.timer`), "utf8");
  t.equal(mode(path.join(units, `validate-backup-${a.user}-verify.timer`)), "0644 root:root");
  t.same(vservice.split("\n").filter((l) => l.startsWith("ExecStart=")), [`ExecStart=${bin} verify --stored --config ${config}`], "the weekly service runs verify --stored alone");
  t.notMatch(vservice, /^SuccessExitStatus=/m, "a problem (exit 1) fails the unit");
  t.match(vservice, /^ProtectSystem=full$/m);
  t.match(vtimer, /^\[Timer\]\nOnCalendar=weekly\n/m);
  t.match(vtimer, /^Persistent=true$/m);
  t.match(r.stdout.toString(), new RegExp(`! validate-backup-${a.user}-verify\\.timer is in ${esc(units)}, where systemd does not look for units: not enabled`), "the weekly timer's skipped enable too");
  const check = await vb(["check", "--user", a.user, ...sys]);
  succeeded(t, check, "check --schedule systemd");
  t.match(check.stdout.toString(), /warning: validate-backup-vbt-\w+\.timer is in .*: not enabled/);
  const wrong = await vb(["check", "--user", a.user, ...a.schedule]);
  t.equal(wrong.code, 1, "check looking for cron finds no cron file");
  // A read-only (pull) key: its unit records the log's head and nothing else; no weekly pair.
  const p = account(t);
  const pkey = clientKey(p.dir);
  const pargs = [...p.args.slice(0, p.args.length - p.schedule.length), ...sys];
  succeeded(t, await vb(["install-remote", ...pargs, "--key", `${pkey}.pub`, "--access", "read-only"]), "a read-only key");
  const pservice = fs.readFileSync(path.join(units, `validate-backup-${p.user}.service`), "utf8");
  t.same(pservice.split("\n").filter((l) => l.startsWith("ExecStart=")), [`ExecStart=${bin} audit --record-head --file ${path.join(p.logDir, `${p.user}.log`)}`, `ExecStart=${bin} notify --config ${path.join(p.configDir, `${p.user}.json`)}`, `ExecStart=${bin} metrics --config-dir ${p.configDir}`], "no seal, no prune for a pull key: the log's head, then notify and metrics");
  t.notOk(fs.existsSync(path.join(units, `validate-backup-${p.user}-verify.service`)), "and no weekly verify --stored");
});

t.test("refusals: not root, unknown option, bad names", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  fs.chmodSync(`${key}.pub`, 0o644);
  const { name } = gateIds();
  t.equal(name, TEST_USER);
  const asUser = await run(["setpriv", `--reuid=${TEST_USER}`, `--regid=${TEST_USER}`, "--init-groups", "/usr/bin/node", path.join(TOP, "dist/app/cli.js"), "install-remote", ...a.args, "--key", `${key}.pub`], { env: { PATH: "/usr/bin:/bin" } });
  t.equal(asUser.code, 2);
  t.match(asUser.stderr, /must run as root/);
  const unknown = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, "--shell", "/bin/bash"]);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /Unknown option '--shell'/);
  const badUser = await vb(["install-remote", "--user", "Root;x", "--root", a.root, "--key", `${key}.pub`]);
  t.equal(badUser.code, 2);
  t.match(badUser.stderr, /lower-case account name/);
  const inHome = await vb(["install-remote", ...a.args.map((x) => (x === a.root ? path.join(a.home, ".ssh", "b") : x)), "--key", `${key}.pub`]);
  t.equal(inHome.code, 2);
  t.match(inHome.stderr, /outside ~\/\.ssh/);
  for (const [opt, why] of [
    [["--keep-full", "0"], /--keep-full needs a whole number of at least 1/],
    [["--retention-days", "0"], /--retention-days needs a whole number of days from 1 to 36500/],
    [["--quota", "lots"], /--quota needs a size such as 500G or 2T/],
    [["--schedule", "weekly"], /--schedule must be one of auto, systemd, cron, none/],
  ] as const) {
    const r = await vb(["install-remote", ...a.args, "--key", `${key}.pub`, ...opt]);
    t.equal(r.code, 2);
    t.match(r.stderr, why);
  }
  // --key: a missing file names the option and the file; the private half is called what it is.
  const missing = await vb(["install-remote", ...a.args, "--key", `${key}.nothere`]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, new RegExp(`--key ${key}\\.nothere: no such file`));
  const secret = await vb(["install-remote", ...a.args, "--key", key]);
  t.equal(secret.code, 2);
  t.match(secret.stderr, /this is a PRIVATE key; give the public one \(.*\.pub/);
  t.notMatch(secret.stderr + secret.stdout.toString(), /BEGIN|PRIVATE KEY-----/, "its contents are never shown");
  t.equal(spawnSync("getent", ["passwd", a.user]).status, 2, "nothing was created");
});
