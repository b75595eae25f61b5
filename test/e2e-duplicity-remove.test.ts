// duplicity's removals through the gate, with each backend's own delete path: after a second full,
// `remove-all-but-n-full 1 --force` and `cleanup --force` remove nothing (issue 5, acceptance 4).
// Two REMOTE accounts (N=2) each receive the same backup. The backups themselves go by sftp://,
// the fastest backend: every backend's put, list and get are proven in e2e-duplicity.test.ts.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { snapshot } from "./helpers/env.js";
import { startSshd, account, succeeded } from "./helpers/sshd.js";
import { haveDuplicity, makeSource, duplicity, tree, url, remoteDir, install } from "./helpers/duplicity-e2e.js";
import { FULL_ONLY } from "./helpers/scale.js";

if (!haveDuplicity) t.plan(0, "needs root, sshd, duplicity and gpg");

// Delete paths: paramiko SFTP REMOVE, `sftp rm` (pexpect+scp deletes through sftp as well), `rm`
// over exec, rsync --delete of a directory holding only the files to keep.
const DELETERS = ["sftp", "pexpect+sftp", "paramiko+scp", "rsync"];

// A dozen duplicity runs do not fit CI's budget: the full run only.
t.test("duplicity removals and N=2 through the gate", FULL_ONLY, async (t) => {
  const sshd = await startSshd(t);
  const a = account(t, { prefix: "m" });
  const src = makeSource(a.dir, { "a.bin": crypto.randomBytes(100_000), "sub/b.txt": "first version\n" });
  await install(t, a, src, sshd);
  const dir = remoteDir(a, "two-fulls");
  const at = (scheme: string) => url(scheme, a, sshd, "two-fulls");

  await t.test("after a second full, the removals duplicity asks for remove nothing", async (t) => {
    succeeded(t, await duplicity(t, src, sshd, "two-fulls", ["full", src.data, at("sftp")]), "full");
    fs.writeFileSync(path.join(src.data, "sub", "b.txt"), "second version\n");
    succeeded(t, await duplicity(t, src, sshd, "two-fulls", ["full", src.data, at("sftp")]), "second full");
    const before = snapshot(dir);
    t.equal(Object.keys(before).filter((f) => f.endsWith(".manifest.gpg")).length, 2, "two finished full sets stored");
    for (const scheme of DELETERS) {
      // duplicity logs the refused deletes and may give up: its exit status is not the point.
      await duplicity(t, src, sshd, "two-fulls", ["remove-all-but-n-full", "1", "--force", at(scheme)]);
      t.same(snapshot(dir), before, `${scheme}: remove-all-but-n-full removed nothing`);
    }
    await duplicity(t, src, sshd, "two-fulls", ["cleanup", "--force", at("sftp")]);
    t.same(snapshot(dir), before, "cleanup removed nothing");
  });

  await t.test("two REMOTE accounts (N=2) each receive the same backup", async (t) => {
    // The first account holds it already (the second full above, data unchanged since).
    const b = account(t, { prefix: "n" });
    await install(t, b, src, sshd);
    const target = url("sftp", b, sshd, "n2");
    succeeded(t, await duplicity(t, src, sshd, "n2", ["full", src.data, target]), `full to ${b.user}`);
    for (const [acct, name, where] of [[a, "two-fulls", at("sftp")], [b, "n2", target]] as const) {
      const restored = path.join(a.dir, `restore-${acct.user}`);
      succeeded(t, await duplicity(t, src, sshd, name, ["restore", where, restored]), `restore from ${acct.user}`);
      t.same(tree(restored), tree(src.data), `${acct.user}: restored byte-identical`);
    }
  });
});
