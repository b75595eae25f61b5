// A full disk never publishes a partial file (issue 17, item 1): root and state on a small tmpfs of
// their own, an upload bigger than the filesystem through the real sftp, scp and rsync clients. The
// client is told, nothing appears under the name, no publish line, the temporary bytes are freed at
// once (a small upload in the same session then works), and a small upload works afterwards.
// With limits.minFreeBytes 0 the free-space check of vault/quota.ts usually refuses first; the last
// case fills the disk behind its back, so that a WRITE meets ENOSPC itself.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, snapshotAll, auditLines, run, FAKE_SSH, type Sandbox } from "./helpers/env.js";
import { rsyncClient, localTree, leftovers } from "./helpers/rsync-client.js";
import { scpClient } from "./helpers/scp-wire.js";
import { SftpClient, FX, PF } from "./helpers/sftp-client.js";
import { OWNER_FILE } from "../src/vault/tmpfiles.js";

t.setTimeout(10 * 60_000);

const MiB = 1024 * 1024;
const FS_BYTES = 16 * MiB;
const BIG = crypto.randomBytes(24 * MiB);

function fullDisk(t: Test): { sb: Sandbox; local: string } {
  const sb = sandbox(t, { fsBytes: FS_BYTES, files: { "old.gpg": "stored before\n" }, config: { limits: { minFreeBytes: 0 } } });
  const local = localTree(t, { "big.gpg": BIG, "small.gpg": "small\n", "small2.gpg": "small 2\n" });
  return { sb, local };
}

/** Nothing of the big upload anywhere: no name, no publish line, nothing left in state. */
function nothingOfBig(t: Test, sb: Sandbox, code: RegExp): void {
  t.notOk(fs.existsSync(path.join(sb.root, "big.gpg")), "no file under the final name");
  const lines = auditLines(sb);
  t.notOk(lines.some((l) => l.event === "publish" && l.path === "big.gpg"), "no publish line for it");
  t.ok(lines.some((l) => (l.event === "refused" || l.event === "error" || l.event === "rsync-exit" || l.event === "skipped") && JSON.stringify(l).match(code)), "the failure is audited");
  t.same(leftovers(sb), [], "nothing left in state's tmp and staging");
}

t.test("sftp put of more than the filesystem holds: CLOSE fails, nothing published, the space is back at once", async (t) => {
  const { sb, local } = fullDisk(t);
  const before = snapshotAll(sb);
  fs.writeFileSync(path.join(local, "batch"), "-put big.gpg big.gpg\nput small.gpg small.gpg\n");
  let r = await run(["sftp", "-S", FAKE_SSH, "-b", "batch", "x:"], { env: sb.sshEnv, cwd: local }, { timeoutMs: 240_000 });
  t.equal(r.code, 0, `the small upload after the failed one works in the same session: ${r.stderr.slice(-400)}`);
  t.match(r.stderr, /big\.gpg/, "the client reports the failed put");
  nothingOfBig(t, sb, /no space left|QUOTA/);
  t.equal(fs.readFileSync(path.join(sb.root, "small.gpg"), "utf8"), "small\n");
  fs.writeFileSync(path.join(local, "batch"), "put small2.gpg small2.gpg\n");
  r = await run(["sftp", "-S", FAKE_SSH, "-b", "batch", "x:"], { env: sb.sshEnv, cwd: local }, { timeoutMs: 240_000 });
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readFileSync(path.join(sb.root, "small2.gpg"), "utf8"), "small 2\n");
  const after = snapshotAll(sb);
  delete after["root/small.gpg"];
  delete after["root/small2.gpg"];
  delete after["root/."];
  delete before["root/."];
  t.same(after, before, "nothing else changed");
});

t.test("scp of more than the filesystem holds: refused, nothing published, a small upload works afterwards", async (t) => {
  const { sb, local } = fullDisk(t);
  const before = snapshotAll(sb);
  let r = await scpClient(sb, ["big.gpg", "host:"], local);
  t.not(r.code, 0);
  t.match(r.stderr, /big\.gpg: (.*no space left|the filesystem is full)/);
  nothingOfBig(t, sb, /no space left|QUOTA/);
  t.same(snapshotAll(sb), before, "nothing changed inside or outside the root");
  r = await scpClient(sb, ["small.gpg", "host:"], local);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readFileSync(path.join(sb.root, "small.gpg"), "utf8"), "small\n");
});

t.test("rsync of more than the filesystem holds: fails, nothing published, a small upload works afterwards", async (t) => {
  const { sb, local } = fullDisk(t);
  const before = snapshotAll(sb);
  let r = await rsyncClient(sb, ["-t", path.join(local, "big.gpg"), "h:"]);
  t.not(r.code, 0);
  t.match(r.stderr, /No space left on device|the filesystem is full/, "rsync's or our message reaches the client");
  t.notMatch(r.stderr, /staging|\.state|\/tmp\//, "without our internal paths");
  t.notOk(fs.existsSync(path.join(sb.root, "big.gpg")), "no file under the final name");
  t.same(leftovers(sb), [], "staging removed");
  t.same(snapshotAll(sb), before, "nothing changed inside or outside the root");
  r = await rsyncClient(sb, ["-t", path.join(local, "small.gpg"), "h:"]);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readFileSync(path.join(sb.root, "small.gpg"), "utf8"), "small\n");
});

t.test("ENOSPC behind the claim (the disk filled by someone else mid-upload): the WRITE fails, the bytes are freed before CLOSE, CLOSE fails", async (t) => {
  const { sb } = fullDisk(t);
  const c = SftpClient.gate(sb);
  t.teardown(() => (c.alive ? c.kill().then(() => undefined) : undefined));
  await c.init();
  const h = await c.openHandle("big.gpg", PF.WRITE | PF.CREAT | PF.TRUNC);
  const MB = crypto.randomBytes(MiB);
  const piece = MB.subarray(0, 128 * 1024);
  for (let off = 0; off < MiB; off += piece.length) t.equal((await c.write(h, off, piece)).status?.code, FX.OK, `WRITE at ${off}`);
  // Root fills the filesystem to the last byte: the next WRITE is within the claim but finds no space.
  const filler = fs.openSync(path.join(path.dirname(sb.root), "filler"), "w");
  try {
    for (;;) fs.writeSync(filler, MB);
  } catch (e) {
    t.equal((e as NodeJS.ErrnoException).code, "ENOSPC", "the filesystem is full");
  } finally {
    fs.closeSync(filler);
  }
  const w = await c.write(h, MiB, piece);
  t.equal(w.status?.code, FX.FAILURE);
  t.match(w.status?.message, /'big\.gpg': no space left on the device/);
  const tmp = path.join(sb.state, "tmp");
  // The session's lock owner file (vault/tmpfiles.ts) is no upload's.
  t.same(fs.readdirSync(tmp).flatMap((d) => fs.readdirSync(path.join(tmp, d))).filter((n) => n !== OWNER_FILE), [], "the temporary file is gone before CLOSE");
  const closed = await c.close(h);
  t.equal(closed.status?.code, FX.FAILURE, "CLOSE fails");
  t.match(closed.status?.message, /'big\.gpg' was not stored: a write failed \('big\.gpg': no space left on the device\)/);
  t.notOk(fs.existsSync(path.join(sb.root, "big.gpg")), "nothing published");
  t.match(auditLines(sb).find((l) => l.event === "upload-failed"), { path: "big.gpg", code: "QUOTA", reason: /no space left/ });
  fs.rmSync(path.join(path.dirname(sb.root), "filler"));
  t.equal((await c.put("small.gpg", "small\n")).status?.code ?? FX.OK, FX.OK, "a small upload in the same session works");
  t.equal((await c.end()).code, 0);
  t.equal(fs.readFileSync(path.join(sb.root, "small.gpg"), "utf8"), "small\n");
});
