// check says whether rsync pulls work on this host: it builds, as the account, the sandbox a pull of
// each key would run in (rsync/jail.ts). Issue 16, item 7.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { account, clientKey, vb, succeeded } from "./helpers/sshd.js";

if (process.getuid?.() !== 0) t.plan(0, "check needs root");

t.test("check reports that rsync pulls run in their sandbox, and says so when it cannot be built", async (t) => {
  const a = account(t);
  const key = clientKey(a.dir);
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${key}.pub`]), "install-remote");
  const ok = await vb(["check", "--user", a.user, ...a.schedule]);
  succeeded(t, ok, "check");
  t.match(ok.stdout.toString(), /^key \S+: rsync pulls run in their sandbox on this host$/m);

  // A sandbox that cannot be built (here: rsync is not where the config says) is a warning with a way out.
  const config = path.join(a.configDir, `${a.user}.json`);
  const old = fs.readFileSync(config, "utf8");
  fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(old), rsync: { path: "/nonexistent/rsync" } }));
  try {
    const bad = await vb(["check", "--user", a.user, ...a.schedule]);
    const out = bad.stdout.toString();
    t.match(out, /warning: key \S+: rsync pulls will be refused on this host: their sandbox cannot be built \(.*\/nonexistent\/rsync.*\)/);
    t.match(out, /fix: allow unprivileged user namespaces .* or pull with SFTP or scp/);
    t.notMatch(out, /rsync pulls run in their sandbox/);
  } finally {
    fs.writeFileSync(config, old);
  }
});
