// duplicity 0.8 with GnuPG encryption and signing, through a real sshd and the installed key, with
// each backend that runs over our protocols: full, incremental, collection-status, verify, a
// byte-identical restore. (Removals and N=2: e2e-duplicity-remove.test.ts, a file of its own so
// that each stays within tap's per-file timeout on a loaded machine and the two can run in parallel.)
//
// One chain in one remote directory, every backend taking its turn on it: each one adds a set
// (put, list) and restores the whole chain (get). That proves every backend's put, list and get
// with about half the duplicity runs of one chain per backend (each run costs 20-100 s on a loaded
// 2-core machine), and shows the backends agree on the files.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { startSshd, account, succeeded } from "./helpers/sshd.js";
import { haveDuplicity, makeSource, duplicity, tree, url, remoteDir, install } from "./helpers/duplicity-e2e.js";
import { QUICK } from "./helpers/scale.js";

if (!haveDuplicity) t.plan(0, "needs root, sshd, duplicity and gpg");

// The first makes the full set, each later one an incremental.
// One duplicity run costs a minute of CPU on two cores: CI's quick scale takes the sftp backend alone
// (duplicity's rsync backend runs in rsync-duplicity.test.ts, the others in the full run).
const BACKENDS = QUICK ? ["sftp"] : ["sftp", "pexpect+sftp", "pexpect+scp", "paramiko+scp", "rsync"];

t.test("duplicity through the gate", async (t) => {
  const sshd = await startSshd(t);
  const a = account(t, { prefix: "d" });
  const src = makeSource(a.dir, { "a.bin": crypto.randomBytes(300_000), "sub/b.txt": "first version\n", "sub/c.bin": crypto.randomBytes(40_000) });
  await install(t, a, src, sshd);
  const dir = remoteDir(a, "chain");
  const at = (scheme: string) => url(scheme, a, sshd, "chain");
  const dup = (t: Parameters<typeof duplicity>[0], args: string[]) => duplicity(t, src, sshd, "chain", args);

  for (const [i, scheme] of BACKENDS.entries()) {
    await t.test(`${scheme}://`, async (t) => {
      if (i > 0) {
        fs.writeFileSync(path.join(src.data, "sub", "b.txt"), `changed for ${scheme}\n`);
        fs.writeFileSync(path.join(src.data, `new-${i}.bin`), crypto.randomBytes(10_000));
      }
      const kind = i === 0 ? "full" : "incremental";
      succeeded(t, await dup(t, [kind, src.data, at(scheme)]), kind);
      const restored = path.join(a.dir, `restore-${i}`);
      succeeded(t, await dup(t, ["restore", at(scheme), restored]), "restore of the whole chain");
      t.same(tree(restored), tree(src.data), "restored byte-identical");
      fs.rmSync(restored, { recursive: true, force: true });
    });
  }

  await t.test("collection-status and verify of the chain", async (t) => {
    const status = await dup(t, ["collection-status", at("paramiko+scp")]);
    succeeded(t, status, "collection-status");
    t.equal((status.stdout.toString().match(/^\s*Incremental\s/gm) ?? []).length, BACKENDS.length - 1, "one full and an incremental per later backend");
    succeeded(t, await dup(t, ["verify", at("sftp"), src.data]), "verify");
    for (const f of fs.readdirSync(dir)) t.match(f, /^duplicity-.*\.gpg$/, `${f}: only encrypted files on REMOTE`);
  });
});
