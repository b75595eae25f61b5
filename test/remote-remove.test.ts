// Day-2 operations on an installed account (issue 17, item 7): remove-key takes one key out (key
// line, config, schedule, the sshd drop-in with the last key) and leaves the backups and the audit
// log where they are; a key switched to read-only loses the weekly units it no longer has;
// install-remote ends with what SOURCE runs.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { snapshot, run, TOP, TEST_USER } from "./helpers/env.js";
import { account, clientKey, vb, succeeded, startSshd, haveSshd, type Account } from "./helpers/sshd.js";

if (!haveSshd) t.plan(0, "install-remote and remove-key need root; the key is tried through /usr/sbin/sshd and ssh");

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

const ak = (a: Account) => fs.readFileSync(path.join(a.home, ".ssh/authorized_keys"), "utf8");
const lsattrA = (p: string) => /^\S*a\S* /.test(spawnSync("lsattr", ["-d", p], { encoding: "utf8" }).stdout);

t.test("remove-key: the dry run shows the plan; one key goes, the other stays; the last key takes the drop-in; backups and logs stay", async (t) => {
  const a = account(t);
  const server = await startSshd(t);
  const sshd = server.config;
  const k1 = clientKey(a.dir, "k1");
  // The key through the real sshd: `true` is the gate's connectivity check.
  const connects = async (key: string) => (await run(["/usr/bin/ssh", ...server.clientOpts(key), `${a.user}@127.0.0.1`, "true"], { env: { PATH: "/usr/bin:/bin", HOME: a.dir } })).code === 0;
  const k2 = clientKey(a.dir, "k2");
  const root2 = path.join(a.dir, "backup2", "root");
  const withSshd = [...a.args, "--sshd-dropin", "--sshd-config", sshd];
  const first = await vb(["install-remote", ...withSshd, "--key", `${k1}.pub`]);
  succeeded(t, first, "install-remote, first key");
  // The SOURCE side: the duplicity URL with --ssh-options and an rsync line, for this key and host.
  const host = os.hostname();
  const out1 = first.stdout.toString();
  t.match(out1, `--ssh-options="-oIdentityFile=/root/.ssh/k1" /etc sftp://${a.user}@${host}/${a.root}/etc`, "the duplicity URL, as README writes it");
  t.match(out1, `rsync -a --ignore-existing -e 'ssh -i /root/.ssh/k1' DIR/ ${a.user}@${host}:DIR/`, "rsync, as README's table of clients writes it");
  t.match(out1, /On SOURCE \(\/root\/\.ssh\/k1 is the private half of \S+k1\.pub/);
  succeeded(t, await vb(["install-remote", ...withSshd.map((x) => (x === a.root ? root2 : x)), "--key", `${k2}.pub`, "--label", "second"]), "install-remote, second key");
  const dropin = path.join(server.dir, "sshd_config.d", `validate-backup-${a.user}.conf`);
  t.ok((await connects(k1)) && (await connects(k2)), "both keys log in");
  const config2 = path.join(a.configDir, "second.json");
  const cron2 = path.join(a.scheduleDir, "validate-backup-second");
  const log2 = path.join(a.logDir, "second.log");
  t.ok(fs.existsSync(dropin) && fs.existsSync(config2) && fs.existsSync(cron2));
  // What the second key stored and logged.
  fs.writeFileSync(path.join(root2, "stored.gpg"), "backup bytes");
  const logBefore = fs.readFileSync(log2, "utf8");

  const before = snapshot(a.dir);
  const dry = await vb(["remove-key", "--label", "second", "--config-dir", a.configDir, ...a.schedule, "--sshd-config", sshd, "--dry-run"]);
  succeeded(t, dry, "remove-key --dry-run");
  const plan = dry.stdout.toString();
  t.match(plan, `Plan (dry run: nothing is changed) to remove the key 'second' (${config2}) from the account ${a.user}`);
  t.match(plan, /rewrite \S+\/authorized_keys root:root 0644/, "the key line");
  t.match(plan, /^the key line: ssh-ed25519 …\S{12} vbt@source-k2$/m, "the key it takes out");
  t.match(plan, `+ remove ${config2}`);
  t.match(plan, `+ remove ${cron2}`);
  t.notMatch(plan, /remove \S+sshd_config\.d/, "the drop-in stays: another key is left");
  t.match(plan, `Would stay: the backups in ${root2} and the state in ${root2}.state`);
  t.match(plan, /3 change\(s\) planned/);
  t.same(snapshot(a.dir), before, "the dry run changed nothing");

  // Not root: refused, nothing changed.
  const asUser = await run(["setpriv", `--reuid=${TEST_USER}`, `--regid=${TEST_USER}`, "--init-groups", "/usr/bin/node", path.join(TOP, "dist/app/cli.js"), "remove-key", "--label", "second", "--config-dir", a.configDir, ...a.schedule], { env: { PATH: "/usr/bin:/bin" } });
  t.equal(asUser.code, 2);
  t.match(asUser.stderr, /remove-key must run as root/);
  t.same(snapshot(a.dir), before, "and changed nothing");

  const help = await vb(["install-remote", "--remove", "--help"]);
  t.equal(help.code, 0);
  t.match(help.stdout.toString(), /^usage: validate-backup remove-key --label NAME/);
  // install-remote --remove is the same command.
  const r = await vb(["install-remote", "--remove", "--label", "second", "--config-dir", a.configDir, ...a.schedule, "--sshd-config", sshd]);
  succeeded(t, r, "install-remote --remove --label second");
  const said = r.stdout.toString();
  t.equal(ak(a).trim().split("\n").length, 1, "one key line left");
  t.match(ak(a), `--config ${path.join(a.configDir, `${a.user}.json`)}"`, "the first key's");
  t.notOk(fs.existsSync(config2), "the config is gone");
  t.notOk(fs.existsSync(cron2), "the schedule is gone");
  t.ok(fs.existsSync(path.join(a.scheduleDir, `validate-backup-${a.user}`)), "the other key's schedule stays");
  t.ok(fs.existsSync(dropin), "the drop-in stays");
  t.equal(fs.readFileSync(path.join(root2, "stored.gpg"), "utf8"), "backup bytes", "the backups stay");
  t.ok(fs.existsSync(`${root2}.state`), "the state stays");
  const logAfter = fs.readFileSync(log2, "utf8");
  t.ok(logAfter.startsWith(logBefore), "the audit log stays, as it was");
  t.ok(lsattrA(log2), "still append-only");
  t.match(JSON.parse(logAfter.slice(logBefore.length).trim().split("\n").at(-1)!), { event: "key-removed", label: "second", client: "root", keyLines: 1, account: a.user }, "and records the removal");
  t.match(said, `Stays: the backups in ${root2} and the state in ${root2}.state`, "it says where the backups are");
  t.match(said, `and the audit log ${log2}`, "and the log");
  t.match(said, `The account ${a.user} keeps 1 other key line(s)`);
  succeeded(t, await vb(["check", "--user", a.user, ...a.schedule, "--sshd-config", sshd]), "check: the account is whole without the key");
  t.notOk(await connects(k2), "sshd refuses the removed key");
  t.ok(await connects(k1), "and still takes the other");

  // Again: nothing of it is left, and it says so.
  const again = await vb(["remove-key", "--label", "second", "--config-dir", a.configDir, ...a.schedule, "--sshd-config", sshd]);
  t.equal(again.code, 2);
  t.match(again.stderr, /no key 'second' is installed here: .*nothing to remove/);

  // The last key: its line, config and schedule, and the drop-in with it.
  const last = await vb(["remove-key", "--label", a.user, "--user", a.user, "--config-dir", a.configDir, ...a.schedule, "--sshd-config", sshd]);
  succeeded(t, last, "remove-key, the last key");
  t.match(last.stdout.toString(), `+ remove ${dropin}`);
  t.match(last.stdout.toString(), /sshd \(pid \d+\) reloaded/, "sshd -t passed and sshd was reloaded");
  t.notOk(await connects(k1), "sshd refuses the last key too");
  t.match(last.stdout.toString(), `The account ${a.user} has no key left`);
  t.equal(ak(a), "", "no key line is left");
  t.notOk(fs.existsSync(dropin), "the drop-in is gone");
  t.notOk(fs.existsSync(path.join(a.scheduleDir, `validate-backup-${a.user}`)));
  t.ok(fs.existsSync(path.join(a.logDir, `${a.user}.log`)) && fs.existsSync(a.root), "its log and root stay");
});

t.test("systemd units: a key switched to read-only loses its weekly pair; remove-key takes the rest and leaves a stranger's file", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  const units = path.join(a.dir, "units");
  const sys = ["--schedule", "systemd", "--schedule-dir", units];
  const args = [...a.args.slice(0, a.args.length - a.schedule.length), ...sys, "--key", `${key}.pub`];
  succeeded(t, await vb(["install-remote", ...args]), "install-remote, append-only");
  const unit = (n: string) => path.join(units, `validate-backup-${a.user}${n}`);
  for (const n of [".service", ".timer", "-verify.service", "-verify.timer"]) t.ok(fs.existsSync(unit(n)), `${n} written`);

  const ro = await vb(["install-remote", ...args, "--access", "read-only"]);
  succeeded(t, ro, "install-remote --access read-only");
  t.match(ro.stdout.toString(), `+ remove ${unit("-verify.timer")}`);
  t.notOk(fs.existsSync(unit("-verify.service")) || fs.existsSync(unit("-verify.timer")), "no weekly verify --stored for a read-only key");
  t.same(
    fs.readFileSync(unit(".service"), "utf8").split("\n").filter((l) => l.startsWith("ExecStart=")),
    [
      `ExecStart=${TOP}/bin/validate-backup audit --record-head --file ${path.join(a.logDir, `${a.user}.log`)}`,
      `ExecStart=${TOP}/bin/validate-backup notify --config ${path.join(a.configDir, `${a.user}.json`)}`,
      `ExecStart=${TOP}/bin/validate-backup metrics --config-dir ${a.configDir}`,
    ],
    "the hourly unit records the log's head, then notify and metrics (no seal, no prune)",
  );
  t.match(ro.stdout.toString(), `rsync -a -e 'ssh -i /root/.ssh/id_ed25519' ${a.user}@${os.hostname()}:${a.root}/ /srv/pulled/`, "the pulling side's line");
  succeeded(t, await vb(["check", "--user", a.user, ...sys]), "check: nothing stale");
  // check sees a stale unit too (here put back by hand).
  fs.writeFileSync(unit("-verify.timer"), `# validate-backup: housekeeping of the key '${a.user}' (starts it).\n`);
  const stale = await vb(["check", "--user", a.user, ...sys]);
  t.equal(stale.code, 1, "check fails on a stale unit");
  t.match(stale.stdout.toString(), `DEVIATION: remove ${unit("-verify.timer")}`);
  fs.rmSync(unit("-verify.timer"));

  // A file under the key's unit name that install-remote did not write is left alone, and said.
  fs.writeFileSync(unit("-verify.service"), "[Unit]\nDescription=the admin's own\n");
  // An authorized_keys the account owns is none install-remote wrote: without --user, root never rewrites it.
  const akPath = path.join(a.home, ".ssh/authorized_keys");
  const lines = ak(a);
  const uid = Number(spawnSync("id", ["-u", a.user], { encoding: "utf8" }).stdout.trim());
  fs.chownSync(akPath, uid, fs.statSync(akPath).gid);
  const r = await vb(["remove-key", "--label", a.user, "--config-dir", a.configDir, ...sys]);
  // The rest of the key goes, but a line is left: remove-key says so and does not exit 0.
  t.equal(r.code, 4, "remove-key fails: a key line is left");
  t.equal(ak(a), lines, "the account's own authorized_keys is not rewritten");
  t.equal(fs.statSync(akPath).uid, uid, "nor made root's");
  t.match(r.stdout.toString(), /no key line in a root-owned authorized_keys names it/);
  t.match(r.stdout.toString(), new RegExp(`NOT REMOVED: ${esc(akPath)}: 1 key line\\(s\\) naming .* in a file ${a.user} owns \\(rewritten only with --user ${a.user}\\)`), "and which line, and how to finish");
  const logged = fs.readFileSync(path.join(a.logDir, `${a.user}.log`), "utf8").trim().split("\n").slice(-2).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(logged, [{ event: "key-removed" }, { event: "key-removal-unfinished", client: "root", left: [new RegExp(`^${esc(akPath)}: 1 key line`)], more: 0 }], "the log says the removal stopped short, and what is left");
  for (const n of [".service", ".timer"]) t.notOk(fs.existsSync(unit(n)), `${n} removed`);
  t.equal(fs.readFileSync(unit("-verify.service"), "utf8"), "[Unit]\nDescription=the admin's own\n", "the stranger's file stays");
  t.match(r.stdout.toString(), new RegExp(`! ${esc(unit("-verify.service"))} does not start with .*left alone`));
  t.notOk(fs.existsSync(path.join(a.configDir, `${a.user}.json`)));
  // --user names the account: root may then rewrite its file, and the key is gone.
  const again = await vb(["remove-key", "--label", a.user, "--user", a.user, "--config-dir", a.configDir, ...sys]);
  succeeded(t, again, "remove-key --user finishes it");
  t.notMatch(ak(a), `${a.user}.json`, "no key line names the config any more");
});

t.test("an authorized_keys remove-key cannot judge (a link, a FIFO, a directory): NOT JUDGED, exit 4, nothing of it touched", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote");
  const akPath = path.join(a.home, ".ssh/authorized_keys");
  const config = path.join(a.configDir, `${a.user}.json`);
  const cron = path.join(a.scheduleDir, `validate-backup-${a.user}`);
  const log = path.join(a.logDir, `${a.user}.log`);
  const rel = (p: string) => path.relative(a.dir, p);
  const keep = { config: fs.readFileSync(config), cron: fs.readFileSync(cron) };
  // The real file, with the line naming the config, kept where the link leads (and put back after each case).
  const elsewhere = path.join(a.dir, "elsewhere");
  fs.mkdirSync(elsewhere);
  const target = path.join(elsewhere, "authorized_keys");
  fs.renameSync(akPath, target);
  const lines = fs.readFileSync(target, "utf8");
  t.match(fs.readFileSync(target, "utf8"), `--config ${config}"`, "the line naming the config is in the file the link leads to");
  const plants: [string, () => void][] = [
    ["a symbolic link", () => fs.symlinkSync(target, akPath)],
    ["a FIFO", () => spawnSync("/usr/bin/mkfifo", ["-m", "0644", akPath])],
    ["a directory", () => fs.mkdirSync(akPath)],
  ];
  for (const [what, plant] of plants)
    for (const user of [[], ["--user", a.user]]) {
      const name = `${what}${user.length ? ", --user" : ", without --user"}`;
      plant();
      // The key's config and schedule, as install-remote left them (the previous case removed them).
      fs.writeFileSync(config, keep.config);
      fs.writeFileSync(cron, keep.cron);
      const before = snapshot(a.dir);
      const logBefore = fs.readFileSync(log, "utf8");
      const r = await vb(["remove-key", "--label", a.user, ...user, "--config-dir", a.configDir, ...a.schedule]);
      const said = r.stdout.toString();
      t.equal(r.code, 4, `${name}: exit 4, not 0 (${JSON.stringify(said.slice(-600) + r.stderr)})`);
      t.match(said, new RegExp(`^NOT JUDGED: ${esc(akPath)} is a ${what === "a FIFO" ? "special file" : what.slice(2)}`, "m"), `${name}: the file is named, and why`);
      t.match(said, new RegExp(`a key line naming ${esc(config)} may be in it`), `${name}: and what that leaves open`);
      // The rest of the key goes (taking access away is never refused); nothing else changes.
      const after = snapshot(a.dir);
      t.ok(!fs.existsSync(config) && !fs.existsSync(cron), `${name}: the config and schedule went`);
      // Besides those and the log, only the lock directory the log line is written under (made once).
      const state = rel(`${a.root}.state`);
      const without = (s: Record<string, string>) => Object.fromEntries(Object.entries(s).filter(([k]) => ![rel(config), rel(cron), rel(log), state, `${state}/locks`].includes(k)));
      t.same(without(after), without(before), `${name}: nothing else changed: the planted object, the link's target, the account's files`);
      t.equal(fs.readFileSync(target, "utf8"), lines, `${name}: the file the link leads to is as it was`);
      if (what === "a symbolic link") t.equal(fs.readlinkSync(akPath), target, `${name}: the link is still the link`);
      const logAfter = fs.readFileSync(log, "utf8");
      t.ok(logAfter.startsWith(logBefore), `${name}: the audit log only grew`);
      const added = logAfter.slice(logBefore.length).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
      t.match(added, [{ event: "key-removed", keyLines: 0 }, { event: "key-removal-unfinished", left: [new RegExp(`^NOT JUDGED: ${esc(akPath)}`)] }], `${name}: the log says the removal stopped short, and why`);
      fs.rmSync(akPath, { recursive: true });
    }
  // Nothing else of the key left: not "nothing to remove" (exit 2) while a file may hold its line.
  fs.symlinkSync(target, akPath);
  const gone = await vb(["remove-key", "--label", a.user, "--config-dir", a.configDir, ...a.schedule]);
  t.equal(gone.code, 4, "config and schedule gone, the link not judged: exit 4");
  t.match(gone.stderr, `NOT JUDGED: ${akPath} is a symbolic link`);
  t.notMatch(gone.stderr, /nothing to remove/);
  // The dry run cannot plan all of it either: it says so, changes nothing, and does not exit 0.
  fs.writeFileSync(config, keep.config);
  const before = snapshot(a.dir);
  const dry = await vb(["remove-key", "--label", a.user, "--user", a.user, "--config-dir", a.configDir, ...a.schedule, "--dry-run"]);
  t.equal(dry.code, 4, "the dry run: exit 4");
  t.match(dry.stdout.toString(), new RegExp(`^NOT JUDGED: ${esc(akPath)} is a symbolic link`, "m"));
  t.same(snapshot(a.dir), before, "the dry run changed nothing");
  fs.rmSync(akPath);
  // The file itself again: judged, its line removed, exit 0.
  fs.renameSync(target, akPath);
  fs.writeFileSync(config, keep.config);
  fs.writeFileSync(cron, keep.cron);
  succeeded(t, await vb(["remove-key", "--label", a.user, "--user", a.user, "--config-dir", a.configDir, ...a.schedule]), "remove-key on a regular authorized_keys");
  t.notMatch(ak(a), `${a.user}.json`, "no key line names the config any more");
});
