// A CLOSE answered before its fsync and link (Vault.admitLater): the client sends the next file
// while the disk catches up, yet never sees the tree behind its own answers. A STAT, a read, a
// listing, a RENAME or a REMOVE sent right behind the CLOSE waits for the name, and so does another
// session's request for it; a second upload of a name still on its way is refused like any existing
// name, in this session or another; a name taken behind the vault's back between the answer and the
// link is an audited `publish-failed` (acknowledged), and whatever took it stays untouched; and what
// OpenSSH's sftp uploads file after file all arrives, each with its line.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import { sandbox, snapshot, auditLines, run, FAKE_SSH, type Sandbox } from "./helpers/env.js";
import { SftpClient, PF, FX, T, describe, type Reply } from "./helpers/sftp-client.js";

t.setTimeout(5 * 60 * 1000);

const PUT = PF.WRITE | PF.CREAT | PF.TRUNC;
const MiB = 1024 * 1024;
const sha = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");

function connect(t: Test, sb: Sandbox): SftpClient {
  const c = SftpClient.gate(sb);
  t.teardown(() => (c.alive ? c.kill().then(() => undefined) : undefined));
  return c;
}

const code = (r: Reply) => r.status?.code ?? FX.OK;

/** Open `name` for writing and write `data` (acknowledged); the handle, ready for its CLOSE. */
async function written(c: SftpClient, name: string, data: Buffer): Promise<Buffer> {
  const h = await c.openHandle(name, PUT, { perm: 0o640 });
  for (let off = 0; off < data.length; off += 255 * 1024) {
    const w = await c.write(h, off, data.subarray(off, off + 255 * 1024));
    if (code(w) !== FX.OK) throw new Error(`WRITE ${name}: ${describe(w)}`);
  }
  return h;
}

t.test("requests sent right behind an early CLOSE see the file: STAT, OPEN for reading, READDIR, RENAME, REMOVE", async (t) => {
  const sb = sandbox(t);
  const c = connect(t, sb);
  await c.init();
  const a = crypto.randomBytes(5000);
  const ha = await written(c, "a.bin", a);
  // Nothing awaited between these: they reach the server together, behind the CLOSE.
  const [closed, st, opened] = await Promise.all([c.close(ha), c.stat("a.bin"), c.open("a.bin", PF.READ)]);
  t.equal(code(closed), FX.OK, `CLOSE: ${describe(closed)}`);
  t.equal(Number(st.attrs?.size), a.length, `STAT right behind the CLOSE finds the file: ${describe(st)}`);
  t.ok(opened.handle, `OPEN for reading right behind the CLOSE: ${describe(opened)}`);
  const back = await c.read(opened.handle!, 0, 8192);
  t.ok(back.data?.equals(a), "and reads the bytes just written");
  await c.close(opened.handle!);

  const hb = await written(c, "b.bin", Buffer.from("bee\n"));
  const [closedB, dirH] = await Promise.all([c.close(hb), c.opendir(".")]);
  t.equal(code(closedB), FX.OK);
  const names: string[] = [];
  for (let r = await c.readdir(dirH.handle!); r.names; r = await c.readdir(dirH.handle!)) names.push(...r.names.map((n) => n.name));
  t.ok(names.includes("b.bin"), `READDIR right behind the CLOSE lists b.bin (${JSON.stringify(names.filter((n) => !n.startsWith(".")))})`);

  const hc = await written(c, "c.bin", Buffer.from("sea\n"));
  const [closedC, renamed] = await Promise.all([c.close(hc), c.rename("c.bin", "c2.bin")]);
  t.equal(code(closedC), FX.OK);
  t.equal(code(renamed), FX.OK, `RENAME of the session's own file right behind its CLOSE: ${describe(renamed)}`);
  const hd = await written(c, "d.bin", Buffer.from("dee\n"));
  const [closedD, removed] = await Promise.all([c.close(hd), c.remove("d.bin")]);
  t.equal(code(closedD), FX.OK);
  t.equal(code(removed), FX.OK, `REMOVE of the session's own file right behind its CLOSE: ${describe(removed)}`);
  await c.end();
  t.same(fs.readdirSync(sb.root).sort(), ["a.bin", "b.bin", "c2.bin"]);
  t.ok(fs.readFileSync(path.join(sb.root, "a.bin")).equals(a));
});

t.test("a name on its way cannot be uploaded again, in the same session or by two handles at once", async (t) => {
  const sb = sandbox(t);
  const around = () => ({ outside: snapshot(sb.outside), home: snapshot(sb.home) });
  const before = around();
  const c = connect(t, sb);
  await c.init();
  const first = Buffer.from("first\n");
  const h = await written(c, "x.bin", first);
  const [closed, again] = await Promise.all([c.close(h), c.open("x.bin", PUT)]);
  t.equal(code(closed), FX.OK);
  t.equal(code(again), FX.FAILURE, `OPEN of x.bin for writing right behind its CLOSE is refused: ${describe(again)}`);
  t.match(again.status?.message ?? "", /exists/);

  // Two uploads of one name, both open: the first CLOSE wins, the second is refused as today.
  const h1 = await written(c, "y.bin", Buffer.from("one\n"));
  const h2 = await written(c, "y.bin", Buffer.from("two\n"));
  const [c1, c2] = await Promise.all([c.close(h1), c.close(h2)]);
  t.equal(code(c1), FX.OK);
  t.equal(code(c2), FX.FAILURE, `the second CLOSE of y.bin: ${describe(c2)}`);
  await c.end();
  t.equal(fs.readFileSync(path.join(sb.root, "x.bin"), "utf8"), "first\n");
  t.equal(fs.readFileSync(path.join(sb.root, "y.bin"), "utf8"), "one\n");
  const pub = auditLines(sb).filter((l) => l.event === "publish").map((l) => l.path);
  t.same(pub.sort(), ["x.bin", "y.bin"], "one publish line each");
  t.same(fs.readdirSync(sb.root).sort(), ["x.bin", "y.bin"], "nothing else in the root");
  t.same(around(), before, "nothing outside the root or in the home changed");
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "no temporary file left");
});

t.test("60 uploads whose CLOSEs are all sent at once: every one stored, each with its line", async (t) => {
  const sb = sandbox(t);
  const c = connect(t, sb);
  await c.init();
  const files = Array.from({ length: 60 }, (_, i) => ({ name: `m${i}.bin`, data: crypto.randomBytes(100 + i) }));
  const handles = await Promise.all(files.map((f) => c.openHandle(f.name, PUT)));
  const writes = await Promise.all(files.map((f, i) => c.write(handles[i]!, 0, f.data)));
  t.ok(writes.every((w) => code(w) === FX.OK), "every WRITE acknowledged");
  const closes = await Promise.all(handles.map((h) => c.close(h)));
  t.ok(closes.every((r) => code(r) === FX.OK), "every CLOSE acknowledged");
  await c.end();
  for (const f of files) t.ok(fs.readFileSync(path.join(sb.root, f.name)).equals(f.data), `${f.name} stored`);
  const lines = auditLines(sb);
  const pub = new Map(lines.filter((l) => l.event === "publish").map((l) => [l.path as string, l.sha256 as string]));
  t.ok(files.every((f) => pub.get(f.name) === sha(f.data)), "each file's SHA-256 in its publish line");
  t.equal(lines.find((l) => l.event === "session-end")?.published, 60);
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "no temporary file left");
});

t.test("another session asking for a name right after its CLOSE was answered waits for it (rclone sets times on a second session)", async (t) => {
  const sb = sandbox(t);
  const data = crypto.randomBytes(12 * MiB); // CLOSE's fsync has all of it to write
  const a = connect(t, sb);
  const b = connect(t, sb);
  await Promise.all([a.init(), b.init()]);
  const h = await written(a, "shared.bin", data);
  const closed = await a.close(h);
  const [st, set] = await Promise.all([b.stat("shared.bin"), b.setstat("shared.bin", { atime: 1_700_000_000, mtime: 1_700_000_000 })]);
  t.equal(code(closed), FX.OK);
  t.equal(Number(st.attrs?.size), data.length, `the other session's STAT finds it: ${describe(st)}`);
  t.equal(code(set), FX.OK, `and its SETSTAT of the times is taken: ${describe(set)}`);
  await Promise.all([a.end(), b.end()]);
  t.equal(fs.statSync(path.join(sb.root, "shared.bin")).mtimeMs, 1_700_000_000_000);
});

t.test("a request for a claimed name waits for the claim's holder, then finds what it linked", async (t) => {
  // The claim another session holds between its answer and its link, made by hand so that the
  // wait is certain: a live process owns it, the name appears 400 ms later, then the claim goes.
  const sb = sandbox(t);
  const c = connect(t, sb);
  await c.init(); // the session has made state/locks, as its own
  const root = fs.statSync(sb.root);
  const claim = path.join(sb.state, "locks", `name-${crypto.createHash("sha256").update(`${root.dev}:${root.ino}/late.bin`).digest("hex").slice(0, 24)}.lock`);
  const holder = spawn("sleep", ["30"]);
  t.teardown(() => holder.kill());
  const start = fs.readFileSync(`/proc/${holder.pid}/stat`, "latin1");
  fs.symlinkSync(`${holder.pid} ${start.slice(start.lastIndexOf(")") + 2).split(" ")[19]}`, claim);
  const asked = Date.now();
  const st = c.stat("late.bin");
  await new Promise((r) => setTimeout(r, 400));
  fs.writeFileSync(path.join(sb.root, "late.bin"), "late\n");
  fs.unlinkSync(claim);
  const r = await st;
  t.equal(Number(r.attrs?.size), 5, `the STAT waited for the claim and found the file: ${describe(r)}`);
  t.ok(Date.now() - asked >= 400, "it was answered only after the claim was given up");
  t.equal(code(await c.stat("never.bin")), FX.NO_SUCH_FILE, "an unclaimed missing name is answered at once");
  await c.end();
});

t.test("two sessions upload one new name: the claim lets exactly one be answered OK", async (t) => {
  const sb = sandbox(t);
  const a = connect(t, sb);
  const b = connect(t, sb);
  await Promise.all([a.init(), b.init()]);
  const [ha, hb] = await Promise.all([written(a, "one.bin", crypto.randomBytes(8 * MiB)), written(b, "one.bin", Buffer.from("bee\n"))]);
  const [ca, cb] = await Promise.all([a.close(ha), b.close(hb)]);
  await Promise.all([a.end(), b.end()]);
  t.same([code(ca), code(cb)].sort(), [FX.OK, FX.FAILURE], `one OK, one FAILURE (${describe(ca)} / ${describe(cb)})`);
  const stored = fs.readFileSync(path.join(sb.root, "one.bin"));
  t.equal(stored.length, code(ca) === FX.OK ? 8 * MiB : 4, "the answered one is the one stored");
  t.notOk(auditLines(sb).some((l) => l.event === "publish-failed"), "no answered upload was lost");
});

t.test("a name taken behind the vault's back between the answer and the link: publish-failed (acknowledged), the other file untouched", async (t) => {
  // 12 MiB stays under the early-flush threshold, so CLOSE's fsync has all of it to write: the
  // test plants the name as root, outside any session (sessions respect the claim), as soon as
  // the CLOSE is answered.
  const sb = sandbox(t);
  const data = crypto.randomBytes(12 * MiB);
  for (let attempt = 1; attempt <= 5; attempt++) {
    const name = `race${attempt}.bin`;
    const c = connect(t, sb);
    await c.init();
    const h = await written(c, name, data);
    let planted = false;
    const closed = await c.close(h);
    try {
      fs.writeFileSync(path.join(sb.root, name), "planted\n", { flag: "wx" });
      planted = true;
    } catch {
      /* the link won this time */
    }
    t.equal(code(closed), FX.OK, "the CLOSE was answered before the link");
    const st = await c.stat(name);
    await c.end();
    if (!planted) continue;
    t.equal(Number(st.attrs?.size), "planted\n".length, "the client sees the file that took the name");
    t.equal(fs.readFileSync(path.join(sb.root, name), "utf8"), "planted\n", "the file that took the name is untouched");
    const failed = auditLines(sb).find((l) => l.event === "publish-failed" && l.path === name);
    t.ok(failed, "the lost upload has its line");
    t.equal(failed?.acknowledged, true, "marked as acknowledged");
    t.equal(failed?.code, "EXISTS");
    t.notOk(auditLines(sb).some((l) => l.event === "publish" && l.path === name), "and no publish line");
    t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "no temporary file left");
    return;
  }
  t.fail("the link always came first: the race could not be set up on this machine");
});

t.test("SIGKILL right after an early answer: the name holds the whole file or nothing, and the next session stores it", async (t) => {
  const sb = sandbox(t);
  const data = crypto.randomBytes(12 * MiB);
  const c = connect(t, sb);
  await c.init();
  const h = await written(c, "killed.bin", data);
  t.equal(code(await c.close(h)), FX.OK, "CLOSE answered");
  await c.kill("SIGKILL");
  const there = fs.existsSync(path.join(sb.root, "killed.bin"));
  if (there) t.ok(fs.readFileSync(path.join(sb.root, "killed.bin")).equals(data), "linked before the kill: whole");
  else t.pass("killed before the link: no name at all (an acknowledged file lost, as README says of a killed session)");
  // The dead session's claim and temporary file stand in nobody's way.
  const d = connect(t, sb);
  await d.init();
  if (!there) {
    t.equal(code(await d.stat("killed.bin")), FX.NO_SUCH_FILE, "a dead session's claim makes nobody wait");
    const h2 = await written(d, "killed.bin", data);
    t.equal(code(await d.close(h2)), FX.OK, "the same upload succeeds in the next session");
  }
  await d.end();
  t.ok(fs.readFileSync(path.join(sb.root, "killed.bin")).equals(data), "stored whole");
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "the killed session's temporary file was swept");
});

t.test("OpenSSH sftp put -r of 300 small files: every one byte-identical, each with its SHA-256", async (t) => {
  const sb = sandbox(t);
  const local = fs.mkdtempSync("/tmp/vb-close-early-");
  t.teardown(() => fs.rmSync(local, { recursive: true, force: true }));
  const src = path.join(local, "small");
  fs.mkdirSync(src);
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), crypto.randomBytes(4096));
  const batch = path.join(local, "batch");
  fs.writeFileSync(batch, `put -r ${src} small\nls -l small/f299.bin\n`);
  fs.chmodSync(local, 0o755);
  const r = await run(["sftp", "-S", FAKE_SSH, "-b", batch, "x:"], { env: sb.sshEnv }, { timeoutMs: 120_000 });
  t.equal(r.code, 0, `sftp exit: ${r.stderr.slice(-500)}`);
  t.match(r.stdout.toString(), /f299\.bin/, "ls right after the last put finds it");
  const want = snapshot(src);
  const got = snapshot(path.join(sb.root, "small"));
  const contents = (s: Record<string, string>) => Object.fromEntries(Object.entries(s).filter(([k]) => k !== ".").map(([k, v]) => [k, v.split(" ")[3]]));
  t.same(contents(got), contents(want), "every file stored with its bytes");
  const pub = auditLines(sb).filter((l) => l.event === "publish");
  t.equal(pub.length, 300, "300 publish lines");
  t.ok(pub.every((l) => l.sha256 === sha(fs.readFileSync(path.join(sb.root, l.path as string)))), "each with the stored file's SHA-256");
  t.equal(T.CLOSE, 4);
});
