// The audit log fails closed (issue 18, item 3): the log on a small filesystem of its own, filled
// up while the gate runs as the test user. A new session is refused before it serves anything; a
// running session whose line cannot be written ends at once, the client told on stderr and (SFTP)
// in the status of the request being handled; nothing stored is lost, nothing half-uploaded stays.
// A lock on the log that cannot be taken refuses the session the same way.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { sandbox, snapshotAll, runGate, gateIds, isRoot, BIN, type Sandbox } from "./helpers/env.js";
import { leftovers } from "./helpers/rsync-client.js";
import { SftpClient, FX, PF, describe } from "./helpers/sftp-client.js";
import { packet, u32, T } from "./helpers/sftp-client.js";

t.setTimeout(5 * 60_000);

const PAGE = 4096;

interface LogFs {
  sb: Sandbox;
  fill(): void;
  unfill(): void;
}

/** A sandbox whose audit log lies alone on a 256 KiB tmpfs; undefined: skipped (not root). */
function logOnSmallFs(t: Test): LogFs | undefined {
  if (!isRoot) {
    t.plan(0, "needs root to mount a tmpfs");
    return undefined;
  }
  const sb = sandbox(t, { files: { "old.gpg": "stored before\n", "a.gpg": "a to read\n" } });
  const mnt = path.join(sb.dir, "logfs");
  fs.mkdirSync(mnt);
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", mnt], { encoding: "utf8" });
  if (m.status !== 0) {
    t.plan(0, `cannot mount a tmpfs: ${m.stderr}`);
    return undefined;
  }
  t.teardown(() => void spawnSync("umount", ["--lazy", mnt]));
  const log = path.join(mnt, "audit.log");
  fs.writeFileSync(log, "");
  const { uid, gid } = gateIds();
  fs.chownSync(log, uid, gid);
  sb.configure({ audit: { file: log } });
  Object.assign(sb, { audit: log });
  const filler = path.join(mnt, "filler");
  return {
    sb,
    // The log ends at a page boundary (a whole line pads it) and the filler takes every page left:
    // the next line the gate appends needs a page there is not.
    fill() {
      const size = fs.statSync(log).size;
      const short = (PAGE - (size % PAGE)) % PAGE;
      const pad = short === 0 ? 0 : short < 40 ? short + PAGE : short;
      if (pad) fs.appendFileSync(log, `{"event":"pad","x":"${"x".repeat(pad - 23)}"}\n`); // 23: the line without its x's
      const fd = fs.openSync(filler, "w");
      try {
        for (;;) fs.writeSync(fd, Buffer.alloc(PAGE));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
      } finally {
        fs.closeSync(fd);
      }
      t.equal(fs.statSync(log).size % PAGE, 0, "the log ends at a page boundary");
    },
    unfill: () => fs.rmSync(filler, { force: true }),
  };
}

/** An SFTP session of the gate, initialised, on a sandbox from logOnSmallFs; undefined: skipped. */
async function sftpOnSmallFs(t: Test): Promise<{ lf: LogFs; sb: Sandbox; c: SftpClient } | undefined> {
  const lf = logOnSmallFs(t);
  if (!lf) return undefined;
  const c = SftpClient.gate(lf.sb);
  t.teardown(() => void c.kill());
  await c.init();
  return { lf, sb: lf.sb, c };
}

/** The session's end, or a failure when it has not ended within 30 s. */
const ended = <T>(exited: Promise<T>): Promise<T> =>
  Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the session did not end")), 30_000))]);

t.test("a full log: new sessions are refused before serving anything; after space is back they work", async (t) => {
  const lf = logOnSmallFs(t);
  if (!lf) return;
  const { sb } = lf;
  const before = snapshotAll(sb);
  lf.fill();
  const logBefore = fs.readFileSync(sb.audit);
  const scp = await runGate(sb, "scp -f a.gpg", { input: Buffer.of(0, 0) });
  t.equal(scp.code, 2, "scp -f refused");
  t.match(scp.stderr, /refused: the audit log cannot be written/, `the client is told: ${JSON.stringify(scp.stderr)}`);
  t.equal(scp.stdout.length, 0, "not a byte of a.gpg (nor an scp reply) served");
  const sftp = await runGate(sb, "internal-sftp", { input: packet(T.INIT, u32(3)) });
  t.equal(sftp.code, 2, "sftp refused");
  t.match(sftp.stderr, /refused: the audit log cannot be written/);
  t.equal(sftp.stdout.length, 0, "no VERSION: nothing served");
  const up = await runGate(sb, "scp -t .", { input: Buffer.concat([Buffer.from("C0644 4 new.gpg\n"), Buffer.from("new\n"), Buffer.of(0)]) });
  t.equal(up.code, 2, "an upload is refused too");
  t.same(fs.readFileSync(sb.audit), logBefore, "the log is as it was");
  t.same(snapshotAll(sb), before, "nothing stored changed, nothing new stored");
  lf.unfill();
  const again = await runGate(sb, "scp -f a.gpg", { input: Buffer.of(0, 0, 0) });
  t.equal(again.code, 0, `with space back, a session works: ${again.stderr}`);
  t.match(again.stdout.toString(), /a to read/);
});

t.test("a running SFTP session whose line cannot be written ends at once; what it stored stays", async (t) => {
  const s = await sftpOnSmallFs(t);
  if (!s) return;
  const { lf, sb, c } = s;
  t.equal((await c.put("stored.gpg", "stored in this session\n")).status?.code, FX.OK, "an upload before the disk fills");
  t.same(await c.get("a.gpg"), Buffer.from("a to read\n"), "a read before the disk fills");
  const partial = await c.openHandle("partial.gpg", PF.WRITE | PF.CREAT | PF.TRUNC);
  t.equal((await c.write(partial, 0, "half of it")).status?.code, FX.OK, "an upload under way");
  const before = snapshotAll(sb);
  lf.fill();
  const read = await c.replyOrExit(c.open("old.gpg", PF.READ));
  t.ok("type" in read && read.status?.code === FX.FAILURE, `OPEN for reading fails: ${"type" in read ? describe(read) : "no reply"}`);
  t.match("type" in read ? read.status?.message : "", /the audit log cannot be written.*session ended/, "the status says why");
  const exit = await ended(c.exited);
  t.equal(exit.code, 4, "the session ended (failed)");
  t.match(exit.stderr, /the audit log cannot be written \(audit log write failed: .*no space left.*\): session ended, nothing more is served/i, "stderr says why");
  t.notOk(c.replies > 0 && c.unclaimed.some((r) => r.data), "no file data after the failure");
  const after = snapshotAll(sb);
  t.same(after, before, "nothing stored lost or changed (stored.gpg stays)");
  t.equal(fs.readFileSync(path.join(sb.root, "stored.gpg"), "utf8"), "stored in this session\n");
  t.notOk(fs.existsSync(path.join(sb.root, "partial.gpg")), "the unfinished upload is not published");
  t.same(leftovers(sb), [], "and its temporary file is gone");
  lf.unfill();
  const again = await runGate(sb, "scp -f stored.gpg", { input: Buffer.of(0, 0, 0) });
  t.equal(again.code, 0, `the session slot is free, a new session works: ${again.stderr}`);
});

t.test("a lock on the log that cannot be taken refuses the session", async (t) => {
  const lf = logOnSmallFs(t);
  if (!lf) return;
  const { sb } = lf;
  // Something at the lock's name that no lock holder ever goes away from, and that cannot be
  // broken (a directory, not empty): the gate waits its limit (12 s) and gives up.
  const locks = path.join(sb.state, "locks");
  fs.mkdirSync(path.join(locks, "audit.lock", "stuck"), { recursive: true });
  const { uid, gid } = gateIds();
  fs.chownSync(locks, uid, gid);
  const before = snapshotAll(sb);
  const started = Date.now();
  const r = await runGate(sb, "scp -f a.gpg", { input: Buffer.of(0, 0, 0) });
  t.comment(`refused after ${((Date.now() - started) / 1000).toFixed(1)} s (noisy)`);
  t.equal(r.code, 2, "refused");
  t.match(r.stderr, /refused: the audit log cannot be written \(audit log write failed: the lock .*audit\.lock could not be taken within 12 s\)/, JSON.stringify(r.stderr));
  t.equal(r.stdout.length, 0, "nothing served");
  t.equal(fs.readFileSync(sb.audit, "utf8"), "", "no line written without the lock");
  t.same(snapshotAll(sb), before, "nothing inside or outside the root changed");
});

t.test("a running scp -f whose next download line cannot be written sends nothing of that file", async (t) => {
  const lf = logOnSmallFs(t);
  if (!lf) return;
  const { sb } = lf;
  const before = snapshotAll(sb);
  const { name } = gateIds();
  const env = { PATH: "/usr/bin:/bin", SSH_CLIENT: "127.0.0.1 50000 22", SSH_ORIGINAL_COMMAND: "scp -f a.gpg old.gpg" };
  const argv = name ? ["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "--config", sb.config] : [BIN, "--config", sb.config];
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
  let out = Buffer.alloc(0);
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (out = Buffer.concat([out, d])));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin.on("error", () => {});
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
  const until = async (what: string, ok: () => boolean) => {
    for (const start = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 20)))
      if (Date.now() - start > 60_000) throw new Error(`no ${what}: ${JSON.stringify(out.toString("latin1"))} ${stderr}`);
  };
  child.stdin.write(Buffer.of(0)); // ready
  await until("C line of a.gpg", () => out.includes("C0644 10 a.gpg\n"));
  lf.fill(); // a.gpg's download line is written; old.gpg's will not be
  child.stdin.write(Buffer.of(0)); // accept a.gpg: its data and status byte follow
  await until("a.gpg's data", () => out.includes("a to read\n\0"));
  child.stdin.write(Buffer.of(0)); // a.gpg received: the next file would come now
  const code = await ended(exited);
  t.equal(code, 4, "the session ended (failed)");
  t.match(stderr, /the audit log cannot be written .*session ended, nothing more is served/, "stderr says why");
  t.notMatch(out.toString("latin1"), /old\.gpg|stored before/, "no C line and no byte of old.gpg");
  t.same(snapshotAll(sb), before, "nothing inside or outside the root changed");
});

t.test("an upload whose publish line cannot be written: the file stays stored, the session ends, the client is told by its end", async (t) => {
  const s = await sftpOnSmallFs(t);
  if (!s) return;
  const { lf, sb, c } = s;
  const h = await c.openHandle("late.gpg", PF.WRITE | PF.CREAT | PF.TRUNC);
  t.equal((await c.write(h, 0, "late bytes\n")).status?.code, FX.OK);
  lf.fill();
  // Answered before its fsync and link (Vault.admitLater): the publish line fails after the answer.
  const close = await c.replyOrExit(c.close(h));
  t.ok("type" in close && close.status?.code === FX.OK, `CLOSE answered early: ${"type" in close ? describe(close) : "no reply"}`);
  const next = await c.replyOrExit(c.stat("late.gpg"));
  t.notOk("type" in next && next.status === undefined, "the next request is not answered as if all were well");
  t.equal((await c.exited).code, 4, "the session ended");
  // link(2) came before the line: the bytes are kept rather than lost; verify --stored names the file as unrecorded.
  t.equal(fs.readFileSync(path.join(sb.root, "late.gpg"), "utf8"), "late bytes\n", "the file is stored whole");
  t.same(leftovers(sb), [], "nothing left in state");
});

t.test("denied commands only counted stay counted while the log cannot be written; the key's next line written brings them", async (t) => {
  const lf = logOnSmallFs(t);
  if (!lf) return;
  const { sb } = lf;
  const { uid, gid } = gateIds();
  const locks = path.join(sb.state, "locks");
  fs.mkdirSync(locks, { recursive: true, mode: 0o700 });
  fs.chownSync(locks, uid, gid);
  // A flood's window that is over: 33 denials, 30 of them written (audit/denials.ts; time is not slept).
  const record = path.join(locks, "denials");
  fs.writeFileSync(record, JSON.stringify({ since: Date.now() - 61_000, count: 33, carried: 0 }));
  fs.chownSync(record, uid, gid);
  const before = snapshotAll(sb);
  const counted = fs.readFileSync(record);
  lf.fill();
  const refused = await runGate(sb, "true");
  t.equal(refused.code, 2, "the log is full: refused");
  t.match(refused.stderr, /refused: the audit log cannot be written/);
  t.same(fs.readFileSync(record), counted, "the refused session left the count as it was");
  t.same(snapshotAll(sb), before, "nothing inside or outside the root changed");
  lf.unfill();
  t.equal((await runGate(sb, "true")).code, 0, "with space back, a session is let in");
  const lines = fs.readFileSync(sb.audit, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(lines.filter((l) => l.event === "request").at(-1), { decision: "allow", notWrittenBefore: 3 }, "its line brings the 3 denials the refused session could not write");
});
