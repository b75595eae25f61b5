// The vault's admission (vault.admit): one path for every new file, whichever protocol brought it.
// The same file, with the same hostile mode, ends up stored with the same mode by SFTP, scp and
// rsync: owner read and write always, group read if asked, never setuid, setgid, sticky or exec.
import fs from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import { sandbox, auditLines, type Sandbox } from "./helpers/env.js";
import { SftpClient, FX, PF } from "./helpers/sftp-client.js";
import { gate, cFile } from "./helpers/scp-wire.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";

const DATA = "the same bytes\n";
// Each hostile mode as the three protocols can send it, and what must be stored.
const CASES: { sftp: number; scp: string; rsync: string; stored: number }[] = [
  { sftp: 0o0000, scp: "0000", rsync: "a=", stored: 0o600 },
  { sftp: 0o4777, scp: "4777", rsync: "u=rwxs,g=rwxs,o=rwxt", stored: 0o640 },
  { sftp: 0o0200, scp: "0200", rsync: "u=w,go=", stored: 0o600 },
  { sftp: 0o0044, scp: "0044", rsync: "u=,go=r", stored: 0o640 },
];

const modeOf = (sb: Sandbox, name: string) => fs.statSync(path.join(sb.root, name)).mode & 0o7777;

async function bySftp(t: Test, sb: Sandbox, name: string, perm: number): Promise<void> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void c.kill());
  await c.init();
  const h = await c.openHandle(name, PF.WRITE | PF.CREAT | PF.TRUNC, { perm });
  t.equal((await c.write(h, 0, DATA)).status?.code, FX.OK);
  t.equal((await c.close(h)).status?.code, FX.OK, `sftp stores ${name}`);
  await c.end();
}

async function byScp(t: Test, sb: Sandbox, name: string, mode: string): Promise<void> {
  const r = await gate(sb, "scp -t .", cFile(name, DATA, mode));
  t.equal(r.code, 0, `scp stores ${name}: ${r.stderr}`);
}

async function byRsync(t: Test, sb: Sandbox, name: string, chmod: string): Promise<void> {
  const src = localTree(t, { [name]: DATA });
  const r = await rsyncClient(sb, ["-rtp", `--chmod=${chmod}`, path.join(src, name), "h:."]);
  t.equal(r.code, 0, `rsync stores ${name}: ${r.stderr}`);
}

for (const c of CASES) {
  t.test(`mode ${c.sftp.toString(8).padStart(4, "0")} is stored as ${c.stored.toString(8)} by every protocol`, async (t) => {
    const sb = sandbox(t);
    await bySftp(t, sb, "by-sftp.gpg", c.sftp);
    await byScp(t, sb, "by-scp.gpg", c.scp);
    await byRsync(t, sb, "by-rsync.gpg", c.rsync);
    for (const name of ["by-sftp.gpg", "by-scp.gpg", "by-rsync.gpg"]) {
      t.equal(modeOf(sb, name), c.stored, `${name} stored as ${c.stored.toString(8)}`);
      t.equal(fs.readFileSync(path.join(sb.root, name), "utf8"), DATA, `${name}: its bytes`);
    }
    const published = auditLines(sb).filter((l) => l.event === "publish");
    t.equal(published.length, 3, "one publish line per protocol");
    t.equal(new Set(published.map((l) => l.sha256)).size, 1, "the same SHA-256 from each");
  });
}
