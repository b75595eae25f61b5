// conformance/attacks.md items 26-35 and 37, at the packet level: each probe sends raw SFTP requests
// to the real gate (run as the unprivileged test user) and asserts the status, the message, the
// audit line and the absence of any side effect (every file inside and outside the root
// byte-identical). Probes are tables: a name, what to send, and what must come back.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { snapshotAll, auditLines, type Sandbox, type AuditLine } from "./helpers/env.js";
import { size, sample, QUICK } from "./helpers/scale.js";
import { SftpClient, hostileWorld, WORLD_FILES, FX, FX_NAME, PF, T, describe, packet, u32, u64, str, attrs, crashSigns, type Reply, type Attrs, type Bytes } from "./helpers/sftp-client.js";
import { cleanString } from "../src/audit/sanitize.js";
import { chain, fullSet, plant, ts } from "./helpers/duplicity.js";
import { OWNER_FILE } from "../src/vault/tmpfiles.js";

const OLD = WORLD_FILES["existing.gpg"];
const W_CT = PF.WRITE | PF.CREAT | PF.TRUNC; // what OpenSSH's put sends

const world = (t: Test, config: Record<string, unknown> = {}): Sandbox => hostileWorld(t, { config });

async function connect(t: Test, sb: Sandbox): Promise<SftpClient> {
  const c = SftpClient.gate(sb);
  t.teardown(() => {
    if (c.alive) c.kill();
  });
  const v = await c.init();
  t.equal(v.version, 3, "VERSION 3");
  return c;
}

/** End the session politely; the server must exit by itself, without a crash. */
async function hangUp(t: Test, c: SftpClient): Promise<void> {
  const exit = await c.end();
  t.equal(crashSigns(exit), undefined, "the server did not crash");
  t.equal(exit.signal, null, "the server exited by itself");
  t.equal(c.protocolError, undefined, "every reply was well-formed");
}

interface Want {
  status: number;
  msg: RegExp;
  /** false: an answer rather than a refusal (NO_SUCH_FILE), so no audit line is expected. */
  audited?: boolean;
}

const DENIED = (msg: RegExp): Want => ({ status: FX.PERMISSION_DENIED, msg });
const EXISTS: Want = { status: FX.FAILURE, msg: /'.+'.* already exists and cannot be overwritten$/ };
const OUTSIDE = DENIED(/outside the backup root/);
const THROUGH_LINK = DENIED(/symbolic link/);
const BAD = (msg: RegExp): Want => ({ status: FX.BAD_MESSAGE, msg });
const NOT_FOUND: Want = { status: FX.NO_SUCH_FILE, msg: /no such file|not a directory/i, audited: false };
const UNSUPPORTED: Want = { status: FX.OP_UNSUPPORTED, msg: /not supported/ };

function refusedLines(lines: AuditLine[], message: string): AuditLine[] {
  const shown = cleanString(message);
  return lines.filter((l) => (l.event === "refused" || l.decision === "deny") && l.reason === shown);
}

/**
 * Send one request and check the refusal in full: status and message, the audit line that carries
 * the same message, and no change anywhere in the sandbox.
 */
async function expectRefused(t: Test, sb: Sandbox, send: () => Promise<Reply>, want: Want, snap = true): Promise<Reply> {
  const before = snap ? snapshotAll(sb) : undefined;
  const seen = auditLines(sb).length;
  const r = await send();
  t.equal(r.type, T.STATUS, `a STATUS reply (got ${describe(r)})`);
  t.equal(r.status?.code, want.status, `status ${FX_NAME[want.status]} (got ${describe(r)})`);
  t.match(r.status?.message ?? "", want.msg, "the message says why");
  if (want.audited !== false) t.equal(refusedLines(auditLines(sb).slice(seen), r.status?.message ?? "").length, 1, "one audit line with the same reason");
  if (before) t.same(snapshotAll(sb), before, "no side effect: root, siblings and home unchanged");
  return r;
}

interface Probe {
  name: string;
  send: (c: SftpClient, sb: Sandbox) => Promise<Reply>;
  want: Want;
}

/**
 * One session, one subtest per probe, the session still serving at the end. At CI's quick scale the
 * sandbox is compared once around the whole batch rather than around each probe (two full snapshots
 * per probe were most of this file's time): a refused request has nothing to undo, so any side
 * effect of any probe still shows at the end of the batch.
 */
async function runProbes(t: Test, sb: Sandbox, probes: Probe[], c?: SftpClient): Promise<SftpClient> {
  const session = c ?? (await connect(t, sb));
  const before = QUICK ? snapshotAll(sb) : undefined;
  for (const p of probes) await t.test(p.name, async (t) => void (await expectRefused(t, sb, () => p.send(session, sb), p.want, !QUICK)));
  if (before) t.same(snapshotAll(sb), before, `no side effect of the ${probes.length} probes: root, siblings and home unchanged`);
  const rp = await session.realpath(".");
  t.equal(rp.names?.[0]?.name, fs.realpathSync(sb.root), "still serving: REALPATH . is the root");
  return session;
}

/** Open for reading and return the handle (a probe's setup step). */
async function readHandle(c: SftpClient, p: string): Promise<Buffer> {
  return c.openHandle(p, PF.READ);
}

/** A complete upload through the given session; fails the setup if refused. */
async function upload(c: SftpClient, name: string, content: Bytes = `content of ${name}\n`): Promise<void> {
  const r = await c.put(name, content);
  if (r.status?.code !== FX.OK) throw new Error(`setup upload of ${name} failed: ${describe(r)}`);
  await c.settle(); // the tests look at the tree themselves
}

const sha = (b: Buffer | string) => crypto.createHash("sha256").update(b).digest("hex");

// ---------------------------------------------------------------------------------------------
// 26. OPEN of an existing name for writing, with every flag combination clients send.
const OPEN_FLAGS: Array<[string, number]> = [
  ["WRITE|TRUNC", PF.WRITE | PF.TRUNC],
  ["WRITE|CREAT|TRUNC (OpenSSH put)", W_CT],
  ["WRITE|CREAT (OpenSSH scp)", PF.WRITE | PF.CREAT],
  ["WRITE|APPEND", PF.WRITE | PF.APPEND],
  ["WRITE|APPEND|CREAT (OpenSSH reput)", PF.WRITE | PF.APPEND | PF.CREAT],
  ["READ|WRITE", PF.READ | PF.WRITE],
  ["WRITE alone", PF.WRITE],
  ["WRITE|CREAT|EXCL", PF.WRITE | PF.CREAT | PF.EXCL],
  ["READ|WRITE|CREAT|TRUNC|APPEND", PF.READ | W_CT | PF.APPEND],
];
const EXISTING_SPELLINGS = (sb: Sandbox): string[] => [
  "existing.gpg",
  "./existing.gpg",
  "dir/../existing.gpg",
  "existing.gpg/",
  `${sb.root}/existing.gpg`,
  "dir/inner.gpg",
];

t.test("26: OPEN of an existing file for writing is refused, the old bytes stay", async (t) => {
  const sb = world(t);
  const probes: Probe[] = [];
  for (const [label, flags] of OPEN_FLAGS)
    for (const name of EXISTING_SPELLINGS(sb)) probes.push({ name: `${label} on ${name}`, send: (c) => c.open(name, flags, { perm: 0o644 }), want: EXISTS });
  probes.push(
    { name: "WRITE|CREAT|TRUNC on a directory", send: (c) => c.open("dir", W_CT), want: EXISTS },
    { name: "WRITE|CREAT|TRUNC on a planted link", send: (c) => c.open("escape-file", W_CT), want: EXISTS },
    { name: "WRITE|CREAT|TRUNC on the root itself", send: (c) => c.open(".", W_CT), want: DENIED(/root itself/) },
  );
  const c = await runProbes(t, sb, probes);
  t.equal((await c.get("existing.gpg")).toString(), OLD, "reading the existing file still works and gives the old bytes");
  await hangUp(t, c);
});

// ---------------------------------------------------------------------------------------------
// 27. An upload cut off before CLOSE leaves nothing under its final name.
async function interrupted(t: Test, sb: Sandbox, name: string, stop: (c: SftpClient) => Promise<unknown>): Promise<void> {
  const before = snapshotAll(sb);
  const c = await connect(t, sb);
  const h = await c.openHandle(name, W_CT, { perm: 0o644 });
  const chunk = crypto.randomBytes(65536);
  for (let off = 0; off < 1 << 20; off += chunk.length) t.equal((await c.write(h, off, chunk)).status?.code, FX.OK);
  t.equal((await c.stat(name)).status?.code, FX.NO_SUCH_FILE, "not visible while the upload is in flight");
  const listed = await c.opendir(".");
  const names = (await c.readdir(listed.handle!)).names?.map((n) => n.name) ?? [];
  t.notOk(names.includes(name), "not listed while in flight");
  await stop(c);
  await c.exited;
  t.same(snapshotAll(sb), before, "nothing appeared under the final name, nothing else changed");
}

t.test("27: OPEN new, WRITE, disconnect before CLOSE", async (t) => {
  const sb = world(t);
  await t.test("EOF before CLOSE: no file, temporary area removed, abandonment audited", async (t) => {
    await interrupted(t, sb, "cut.gpg", (c) => c.end());
    t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "no temporary file left in state");
    t.match(auditLines(sb).filter((l) => l.event === "upload-abandoned"), [{ path: "cut.gpg", bytes: 1 << 20 }]);
  });
  await t.test("SIGKILL before CLOSE: no file; the next session sweeps the leftovers and the same upload succeeds", async (t) => {
    await interrupted(t, sb, "killed.gpg", (c) => c.kill("SIGKILL"));
    const c = await connect(t, sb);
    await upload(c, "killed.gpg", "complete\n");
    t.equal((await c.get("killed.gpg")).toString(), "complete\n");
    await hangUp(t, c);
    t.equal(fs.readFileSync(path.join(sb.root, "killed.gpg"), "utf8"), "complete\n", "the retried upload is there, whole");
    t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "the killed session's temporary file was swept");
  });
});

// ---------------------------------------------------------------------------------------------
// 28. SETSTAT / FSETSTAT on what existed before the session.
t.test("28: SETSTAT and FSETSTAT cannot change an existing file or directory", async (t) => {
  const sb = world(t);
  const size = Buffer.byteLength(OLD);
  const IMMUTABLE = DENIED(/^append-only: .*(cannot be (changed|truncated)|owner)/);
  const setstat = (p: string, a: Attrs): Probe["send"] => (c) => c.setstat(p, a);
  const fsetstat = (a: Attrs): Probe["send"] => async (c) => c.fsetstat(await readHandle(c, "existing.gpg"), a);
  const probes: Probe[] = [
    { name: "SETSTAT size 0 (truncate)", send: setstat("existing.gpg", { size: 0 }), want: IMMUTABLE },
    { name: "SETSTAT size smaller", send: setstat("existing.gpg", { size: 5 }), want: IMMUTABLE },
    { name: "SETSTAT size larger (extend)", send: setstat("existing.gpg", { size: size + 100 }), want: IMMUTABLE },
    { name: "SETSTAT size equal, on a file this session did not create", send: setstat("existing.gpg", { size }), want: IMMUTABLE },
    { name: "SETSTAT perm 0777", send: setstat("existing.gpg", { perm: 0o777 }), want: IMMUTABLE },
    { name: "SETSTAT perm 04755 (setuid)", send: setstat("existing.gpg", { perm: 0o4755 }), want: IMMUTABLE },
    { name: "SETSTAT perm 0 (make unreadable)", send: setstat("existing.gpg", { perm: 0 }), want: IMMUTABLE },
    { name: "SETSTAT uid/gid 0", send: setstat("existing.gpg", { uid: 0, gid: 0 }), want: IMMUTABLE },
    { name: "SETSTAT times", send: setstat("existing.gpg", { atime: 1, mtime: 1 }), want: IMMUTABLE },
    { name: "SETSTAT perm on an existing directory", send: setstat("dir", { perm: 0o777 }), want: IMMUTABLE },
    { name: "SETSTAT perm on the root", send: setstat(".", { perm: 0o777 }), want: IMMUTABLE },
    { name: "SETSTAT through a planted link", send: setstat("escape-file", { perm: 0o777 }), want: IMMUTABLE },
    { name: "SETSTAT with extended attributes", send: setstat("existing.gpg", { ext: [["user.x", "y"]] }), want: DENIED(/extended attributes/) },
    { name: "FSETSTAT size 0 on a read handle", send: fsetstat({ size: 0 }), want: IMMUTABLE },
    { name: "FSETSTAT perm on a read handle", send: fsetstat({ perm: 0o777 }), want: IMMUTABLE },
    { name: "FSETSTAT uid/gid on a read handle", send: fsetstat({ uid: 0, gid: 0 }), want: IMMUTABLE },
    { name: "lsetstat@openssh.com perm", send: (c) => c.extended("lsetstat@openssh.com", str("existing.gpg"), attrs({ perm: 0o777 })), want: DENIED(/./) },
  ];
  const c = await runProbes(t, sb, probes);

  await t.test("on its own upload: size equal to what was written is fine, anything else refused, mode masked", async (t) => {
    const h = await c.openHandle("mine.gpg", PF.WRITE | PF.CREAT, { perm: 0o644 });
    t.equal((await c.write(h, 0, "12345678")).status?.code, FX.OK);
    await expectRefused(t, sb, () => c.fsetstat(h, { size: 4 }), DENIED(/cannot be truncated or extended/));
    await expectRefused(t, sb, () => c.fsetstat(h, { size: 100 }), DENIED(/cannot be truncated or extended/));
    await expectRefused(t, sb, () => c.fsetstat(h, { uid: 0, gid: 0 }), DENIED(/owner/));
    t.equal((await c.fsetstat(h, { size: 8 })).status?.code, FX.OK, "size equal to what was written (scp) is accepted");
    t.equal((await c.fsetstat(h, { perm: 0o6777 })).status?.code, FX.OK, "perm is accepted on its own upload");
    t.equal((await c.close(h)).status?.code, FX.OK);
    await c.settle();
    const mode = fs.statSync(path.join(sb.root, "mine.gpg")).mode & 0o7777;
    t.equal(mode & 0o7111, 0, `no setuid, setgid, sticky or exec bit stored (mode ${mode.toString(8)})`);
    await expectRefused(t, sb, () => c.setstat("mine.gpg", { size: 0 }), IMMUTABLE);
    t.equal(fs.readFileSync(path.join(sb.root, "mine.gpg"), "utf8"), "12345678", "even its own published file cannot be truncated");
  });
  await hangUp(t, c);
});

// ---------------------------------------------------------------------------------------------
// 29. Removing and renaming.
t.test("29: REMOVE, RMDIR, RENAME and posix-rename cannot touch what existed before", async (t) => {
  const sb = world(t);
  const c = await connect(t, sb);
  await upload(c, "mine.gpg");
  await upload(c, "mine2.gpg");
  const CANNOT = DENIED(/^append-only: .*cannot be (removed|renamed)|directories cannot be removed/);
  const posix = (a: string, b: string): Probe["send"] => (c) => c.extended("posix-rename@openssh.com", str(a), str(b));
  const probes: Probe[] = [
    { name: "REMOVE an existing file", send: (c) => c.remove("existing.gpg"), want: CANNOT },
    { name: "REMOVE an existing file by absolute path", send: (c, sb) => c.remove(`${sb.root}/dir/inner.gpg`), want: CANNOT },
    { name: "REMOVE a directory", send: (c) => c.remove("empty"), want: CANNOT },
    { name: "REMOVE a planted link", send: (c) => c.remove("escape-file"), want: CANNOT },
    { name: "REMOVE the root", send: (c) => c.remove("."), want: DENIED(/root itself|cannot be removed/) },
    { name: "RMDIR an empty directory", send: (c) => c.rmdir("empty"), want: CANNOT },
    { name: "RMDIR a full directory", send: (c) => c.rmdir("dir"), want: CANNOT },
    { name: "RENAME a file this session did not create", send: (c) => c.rename("existing.gpg", "moved.gpg"), want: CANNOT },
    { name: "RENAME a directory", send: (c) => c.rename("dir", "dir2"), want: CANNOT },
    { name: "RENAME its own file onto an existing name", send: (c) => c.rename("mine.gpg", "existing.gpg"), want: EXISTS },
    { name: "RENAME its own file onto an existing directory", send: (c) => c.rename("mine.gpg", "dir"), want: EXISTS },
    { name: "RENAME its own file onto another of its own", send: (c) => c.rename("mine.gpg", "mine2.gpg"), want: EXISTS },
    { name: "RENAME its own file out of the root", send: (c) => c.rename("mine.gpg", "../mine.gpg"), want: OUTSIDE },
    { name: "RENAME its own file through a planted link", send: (c) => c.rename("mine.gpg", "escape/mine.gpg"), want: THROUGH_LINK },
    { name: "posix-rename its own file onto an existing name", send: posix("mine.gpg", "existing.gpg"), want: EXISTS },
    { name: "posix-rename a file this session did not create", send: posix("existing.gpg", "moved.gpg"), want: CANNOT },
    { name: "posix-rename a directory", send: posix("dir", "dir2"), want: CANNOT },
  ];
  await runProbes(t, sb, probes, c);
  await t.test("its own published file may be renamed to a new name and removed (duplicity .part, restic locks)", async (t) => {
    t.equal((await c.rename("mine.gpg", "renamed.gpg")).status?.code, FX.OK);
    t.equal((await c.extended("posix-rename@openssh.com", str("renamed.gpg"), str("renamed2.gpg"))).status?.code, FX.OK);
    t.equal((await c.remove("renamed2.gpg")).status?.code, FX.OK);
    t.notOk(fs.existsSync(path.join(sb.root, "renamed2.gpg")));
  });
  await hangUp(t, c);

  await t.test("another session cannot remove or rename what the first one published", async (t) => {
    const c2 = await runProbes(t, sb, [
      { name: "REMOVE another session's file", send: (c) => c.remove("mine2.gpg"), want: CANNOT },
      { name: "RENAME another session's file", send: (c) => c.rename("mine2.gpg", "x.gpg"), want: CANNOT },
    ]);
    await hangUp(t, c2);
  });
});

// ---------------------------------------------------------------------------------------------
// 30. Links and server-side copies.
t.test("30: SYMLINK, hardlink@openssh.com and copy-data are refused", async (t) => {
  const sb = world(t);
  const c = await connect(t, sb);
  await upload(c, "mine.gpg");
  const NO_LINK = DENIED(/symbolic links cannot be created|hard links cannot be made/);
  const hardlink = (a: string, b: string): Probe["send"] => (c) => c.extended("hardlink@openssh.com", str(a), str(b));
  const copyData: Probe["send"] = async (c) => {
    const from = await readHandle(c, "existing.gpg");
    const to = await c.openHandle("copy.gpg", W_CT);
    return c.extended("copy-data", str(from), u64(0), u64(0), str(to), u64(0));
  };
  const probes: Probe[] = [
    { name: "SYMLINK to /etc/passwd (OpenSSH order: target, link)", send: (c) => c.symlink("/etc/passwd", "l1"), want: NO_LINK },
    { name: "SYMLINK (draft order: link, target)", send: (c) => c.symlink("l2", "/etc/passwd"), want: NO_LINK },
    { name: "SYMLINK onto an existing name", send: (c) => c.symlink("/etc/passwd", "existing.gpg"), want: NO_LINK },
    { name: "SYMLINK to a relative target inside the root", send: (c) => c.symlink("existing.gpg", "l3"), want: NO_LINK },
    { name: "hardlink@openssh.com of an existing file", send: hardlink("existing.gpg", "hl.gpg"), want: NO_LINK },
    { name: "hardlink@openssh.com of its own file", send: hardlink("mine.gpg", "hl2.gpg"), want: NO_LINK },
    { name: "hardlink@openssh.com onto an existing name", send: hardlink("mine.gpg", "existing.gpg"), want: NO_LINK },
    { name: "hardlink@openssh.com of a file outside", send: (c, sb) => c.extended("hardlink@openssh.com", str(`${sb.outside}/canary.txt`), str("hl3")), want: NO_LINK },
    { name: "copy-data from an existing file into an upload", send: copyData, want: DENIED(/copy-data/) },
  ];
  await runProbes(t, sb, probes, c);
  await hangUp(t, c);
  t.notOk(fs.existsSync(path.join(sb.root, "copy.gpg")), "the copy-data target upload was abandoned, never published");
});

// ---------------------------------------------------------------------------------------------
// 31. Paths that lead out of the root.
type PathKind = "outside" | "link" | "tilde";
const ESCAPES = (sb: Sandbox): Array<[string, PathKind]> => [
  ["../x", "outside"],
  ["../outside/canary.txt", "outside"],
  ["dir/../../outside/canary.txt", "outside"],
  [`${sb.root}/../outside/canary.txt`, "outside"],
  ["/etc/passwd", "outside"],
  ["/proc/self/environ", "outside"],
  ["/proc/self/fd/0", "outside"],
  [`${sb.home}/.ssh/authorized_keys`, "outside"],
  [`${sb.outside}/canary.txt`, "outside"],
  [`${sb.dir}/config.json`, "outside"],
  ["~/.ssh/authorized_keys", "tilde"],
  ["escape/canary.txt", "link"],
  ["escape/sub", "link"],
  ["escape-file", "link"],
  ["escape-abs", "link"],
];
type PathOp = [string, (c: SftpClient, p: string) => Promise<Reply>];
const PATH_OPS: PathOp[] = [
  ["OPEN READ", (c, p) => c.open(p, PF.READ)],
  ["OPEN WRITE|CREAT|TRUNC", (c, p) => c.open(p, W_CT)],
  ["STAT", (c, p) => c.stat(p)],
  ["OPENDIR", (c, p) => c.opendir(p)],
  ["READLINK", (c, p) => c.readlink(p)],
  ["SETSTAT", (c, p) => c.setstat(p, { perm: 0o777 })],
  ["MKDIR", (c, p) => c.mkdir(p)],
  ["REALPATH", (c, p) => c.realpath(p)],
  ["statvfs", (c, p) => c.extended("statvfs@openssh.com", str(p))],
];
const READLINK_REFUSED = DENIED(/symbolic links are never read/);

/** What each operation must answer for each kind of escaping path. */
function escapeWant(op: string, p: string, kind: PathKind): Want | "answer" {
  if (op === "READLINK") return READLINK_REFUSED;
  if (kind === "outside") return OUTSIDE;
  if (kind === "tilde") {
    // '~' is an ordinary (absent) name below the root: never the account's home.
    if (op === "REALPATH") return "answer";
    if (op === "MKDIR" || op === "OPEN WRITE|CREAT|TRUNC" || op === "SETSTAT" || op === "OPEN READ" || op === "STAT" || op === "OPENDIR" || op === "statvfs") return NOT_FOUND;
  }
  // A planted link: never followed. The name itself exists, so creating it fails as EXISTS.
  const isLinkItself = !p.includes("/");
  if (isLinkItself && (op === "MKDIR" || op === "OPEN WRITE|CREAT|TRUNC")) return EXISTS;
  if (op === "REALPATH") return "answer";
  // statvfs of the link's name describes the root's filesystem: the link is not followed.
  if (isLinkItself && op === "statvfs") return "answer";
  return isLinkItself && op === "SETSTAT" ? DENIED(/cannot be changed/) : THROUGH_LINK;
}

t.test("31: paths out of the root, through planted links or into the home are refused", async (t) => {
  const sb = world(t);
  const rootReal = fs.realpathSync(sb.root);
  const probes: Probe[] = [];
  const answers: Array<[string, string, PathOp[1]]> = [];
  for (const [p, kind] of ESCAPES(sb))
    for (const [op, send] of PATH_OPS) {
      const want = escapeWant(op, p, kind);
      if (want === "answer") answers.push([op, p, send]);
      else probes.push({ name: `${op} ${p}`, send: (c) => send(c, p), want });
    }
  probes.push(
    { name: "OPENDIR of the root's parent", send: (c) => c.opendir(".."), want: OUTSIDE },
    { name: "OPENDIR of /", send: (c) => c.opendir("/"), want: OUTSIDE },
    { name: "OPEN READ of an ancestor of the root", send: (c, sb) => c.open(sb.dir, PF.READ), want: OUTSIDE },
    { name: "expand-path ~otheruser", send: (c) => c.extended("expand-path@openssh.com", str("~root/.ssh/authorized_keys")), want: DENIED(/only this key's own home/) },
  );
  const c = await runProbes(t, sb, probes);

  await t.test("what is answered stays inside the root and says nothing of what lies outside", async (t) => {
    for (const [op, p, send] of answers) {
      const r = await send(c, p);
      if (op === "statvfs") t.equal(r.type, T.EXTENDED_REPLY, `${op} ${p}: the root's filesystem (${describe(r)})`);
      else t.ok(r.names?.[0]?.name.startsWith(rootReal + "/"), `${op} ${p} -> ${r.names?.[0]?.name ?? describe(r)} lies inside the root`);
    }
    const l = await c.lstat("escape-file");
    t.equal((l.attrs?.perm ?? 0) & 0o170000, 0o120000, "LSTAT of a planted link describes the link, not its target");
    t.not(Number(l.attrs?.size), fs.statSync(path.join(sb.outside, "canary.txt")).size, "and not the target's size");
    const home = await c.extended("expand-path@openssh.com", str("~/.ssh/authorized_keys"));
    t.equal(home.names?.[0]?.name, `${rootReal}/.ssh/authorized_keys`, "expand-path ~ is the root, never the account's home");
    const anc = await c.stat(sb.dir);
    t.equal(anc.type, T.ATTRS, "STAT of an ancestor answers (paramiko walks down to the root)");
    t.equal(anc.attrs?.uid, 0, "with neutral attributes, not the real directory's");
  });
  await hangUp(t, c);
});

// ---------------------------------------------------------------------------------------------
// 32. Hostile strings: refused, and the session goes on serving.
t.test("32: NUL, invalid UTF-8, 64 KiB names and 4096 components are refused; the session keeps serving", async (t) => {
  const sb = world(t);
  const INVALID_UTF8 = Buffer.from([0x66, 0x6f, 0x80, 0xff, 0x2e, 0x67]);
  const LONG = "a".repeat(65536);
  const DEEP = "a/".repeat(4095) + "a";
  const NOT_UTF8 = BAD(/not valid UTF-8/);
  const NUL = BAD(/NUL/);
  const TOO_LONG = BAD(/limited to/);
  const probes: Probe[] = [
    { name: "OPEN with a NUL in the name", send: (c) => c.open("new\0.gpg", W_CT), want: NUL },
    { name: "OPEN with a NUL hiding an existing name", send: (c) => c.open("existing.gpg\0.new", W_CT), want: NUL },
    { name: "MKDIR with a NUL", send: (c) => c.mkdir("d\0x"), want: NUL },
    { name: "RENAME target with a NUL", send: (c) => c.rename("existing.gpg", "a\0b"), want: NUL },
    { name: "OPEN with invalid UTF-8", send: (c) => c.open(INVALID_UTF8, W_CT), want: NOT_UTF8 },
    { name: "MKDIR with invalid UTF-8", send: (c) => c.mkdir(INVALID_UTF8), want: NOT_UTF8 },
    { name: "STAT with invalid UTF-8", send: (c) => c.stat(INVALID_UTF8), want: NOT_UTF8 },
    { name: "an extension name of invalid UTF-8", send: (c) => c.request(T.EXTENDED, str(INVALID_UTF8)), want: NOT_UTF8 },
    { name: "OPEN with a 64 KiB name", send: (c) => c.open(LONG, W_CT), want: TOO_LONG },
    { name: "STAT with a 64 KiB name", send: (c) => c.stat(LONG), want: TOO_LONG },
    { name: "REALPATH with a 64 KiB name", send: (c) => c.realpath(LONG), want: TOO_LONG },
    { name: "RENAME onto a 64 KiB name", send: (c) => c.rename("existing.gpg", LONG), want: TOO_LONG },
    { name: "OPEN with a 256-byte component", send: (c) => c.open("b".repeat(256), W_CT), want: TOO_LONG },
    { name: "OPEN with 4096 components", send: (c) => c.open(DEEP, W_CT), want: TOO_LONG },
    { name: "MKDIR with 4096 components", send: (c) => c.mkdir(DEEP), want: TOO_LONG },
    { name: "OPEN with 200 short components", send: (c) => c.open("a/".repeat(199) + "a", W_CT), want: TOO_LONG },
    { name: "OPEN with 10000 '..' components", send: (c) => c.open("../".repeat(10000) + "etc/passwd", PF.READ), want: TOO_LONG },
  ];
  const c = await runProbes(t, sb, probes);
  await t.test("ordinary names still work afterwards, including UTF-8 and spaces", async (t) => {
    await upload(c, "naïve name ✓.gpg", "ok\n");
    t.equal(fs.readFileSync(path.join(sb.root, "naïve name ✓.gpg"), "utf8"), "ok\n");
  });
  await hangUp(t, c);
});

// ---------------------------------------------------------------------------------------------
// 33. Malformed packets and handle abuse.
/** A fresh session gets `bytes`, which leave no packet boundary to trust: it must hang up by itself. */
async function framing(t: Test, sb: Sandbox, bytes: Buffer): Promise<void> {
  const before = snapshotAll(sb);
  const seen = auditLines(sb).length;
  const c = await connect(t, sb);
  t.equal((await c.realpath(".")).type, T.NAME, "serving before the bad packet");
  const answered = c.replies;
  c.sendRaw(bytes);
  // No EOF from us: a server still waiting for the rest of a 2 GiB packet would hang here.
  const timer = setTimeout(() => c.kill("SIGKILL"), 15_000);
  const exit = await c.exited;
  clearTimeout(timer);
  t.not(exit.signal, "SIGKILL", "the server hung up by itself, without waiting for more input");
  t.equal(c.replies, answered, "no reply to the bad packet");
  t.equal(crashSigns(exit), undefined, "no crash");
  t.not(exit.code, 0, "a failure exit status");
  t.match(exit.stderr, /protocol error/i, "stderr says why");
  t.ok(
    auditLines(sb)
      .slice(seen)
      .some((l) => /protocol error/i.test(String(l.reason ?? ""))),
    "the audit log says why",
  );
  t.same(snapshotAll(sb), before, "no side effect");
}

/** A packet whose length field says `len` but which carries `body` (possibly not that long). */
const lying = (len: number, body: Buffer) => Buffer.concat([u32(len), body]);

t.test("33: malformed packets get an error reply or a clean disconnect, never a crash", async (t) => {
  const sb = world(t);
  const MALFORMED = BAD(/malformed request|runs past the end/);
  const disconnects: Array<[string, Buffer]> = [
    ["a packet length of 0", u32(0)],
    ["a packet length of 2^31", lying(0x80000000, Buffer.from([T.OPEN, 0, 0, 0, 1]))],
    ["a packet length of 2^32-1", lying(0xffffffff, Buffer.from([T.WRITE]))],
    ["a packet one byte over the 256 KiB limit", packet(T.WRITE, u32(1), Buffer.alloc(256 * 1024))],
    ["a packet too short to carry a request id", lying(3, Buffer.from([T.STAT, 0, 0]))],
    ["INIT a second time", packet(T.INIT, u32(3))],
  ];
  // Each ends its session: one server start apiece, so the quick scale (CI) takes every other one.
  for (const [name, bytes] of sample(disconnects, 2)) await t.test(name, (t) => framing(t, sb, bytes));

  // Each of these is answered with the request's id, and the session goes on.
  const req = (type: number, ...fields: Buffer[]): Probe["send"] => (c) => c.request(type, ...fields);
  const probes: Probe[] = [
    { name: "OPEN with no fields at all", send: req(T.OPEN), want: MALFORMED },
    { name: "OPEN whose filename length runs past the packet", send: req(T.OPEN, u32(1000), Buffer.from("short")), want: MALFORMED },
    { name: "OPEN without its attributes", send: req(T.OPEN, str("new.gpg"), u32(W_CT)), want: MALFORMED },
    { name: "OPEN with unknown pflags", send: req(T.OPEN, str("new.gpg"), u32(0x1000 | W_CT), attrs()), want: MALFORMED },
    { name: "OPEN with unknown attribute flags", send: req(T.OPEN, str("new.gpg"), u32(W_CT), u32(0x40)), want: MALFORMED },
    { name: "OPEN with an extended-attribute count of 2^32-1", send: req(T.OPEN, str("new.gpg"), u32(W_CT), u32(0x80000000), u32(0xffffffff)), want: MALFORMED },
    { name: "STAT whose path length runs past the packet", send: req(T.STAT, u32(100), Buffer.from("existing.gpg")), want: MALFORMED },
    { name: "WRITE whose data length runs past the packet", send: req(T.WRITE, str(u32(1)), u64(0), u32(0x7fffffff), Buffer.from("x")), want: MALFORMED },
    { name: "READ at an offset of 2^63", send: req(T.READ, str(u32(1)), u64(2n ** 63n), u32(10)), want: MALFORMED },
    { name: "an unknown request type (99)", send: req(99), want: UNSUPPORTED },
    { name: "request type 0", send: req(0), want: UNSUPPORTED },
    { name: "request type 255 with a body", send: req(255, Buffer.alloc(100)), want: UNSUPPORTED },
    { name: "a reply type sent as a request (STATUS)", send: req(T.STATUS, u32(0), str(""), str("")), want: UNSUPPORTED },
    { name: "VERSION sent as a request", send: req(T.VERSION, u32(3)), want: UNSUPPORTED },
    { name: "an unknown extension", send: req(T.EXTENDED, str("evil@example.com"), Buffer.from("x")), want: UNSUPPORTED },
  ];
  await hangUp(t, await runProbes(t, sb, probes));

  await t.test("a request before INIT ends the session", async (t) => {
    const c = SftpClient.gate(sb);
    t.teardown(() => void (c.alive && c.kill()));
    c.sendRaw(packet(T.OPEN, u32(1), str("x.gpg"), u32(W_CT), attrs()));
    const exit = await c.exited;
    t.equal(c.replies, 0, "no reply");
    t.equal(crashSigns(exit), undefined);
    t.notOk(fs.existsSync(path.join(sb.root, "x.gpg")));
  });
});

t.test("33: handle abuse", async (t) => {
  const sb = world(t);
  const c = await connect(t, sb);
  const rh = await readHandle(c, "existing.gpg");
  const closed = await readHandle(c, "existing.gpg");
  t.equal((await c.close(closed)).status?.code, FX.OK);
  const INVALID = BAD(/invalid handle|the handle is/);
  const probes: Probe[] = [
    { name: "WRITE on a read handle", send: (c) => c.write(rh, 0, "overwrite!"), want: BAD(/write: the handle is a file open for reading/) },
    { name: "WRITE at the end of a read handle (append)", send: (c) => c.write(rh, Buffer.byteLength(OLD), "more"), want: INVALID },
    { name: "READ on a closed handle", send: (c) => c.read(closed, 0, 100), want: INVALID },
    { name: "CLOSE a closed handle", send: (c) => c.close(closed), want: INVALID },
    { name: "READ on a handle never given out", send: (c) => c.read(u32(0x7fffffff), 0, 100), want: INVALID },
    { name: "READ on an empty handle", send: (c) => c.read(Buffer.alloc(0), 0, 100), want: INVALID },
    { name: "READ on a 1 KiB handle", send: (c) => c.read(Buffer.alloc(1024, 1), 0, 100), want: INVALID },
    { name: "READDIR on a file handle", send: (c) => c.readdir(rh), want: INVALID },
    { name: "FSETSTAT on a closed handle", send: (c) => c.fsetstat(closed, { perm: 0o777 }), want: INVALID },
    { name: "fsync@openssh.com on a closed handle", send: (c) => c.extended("fsync@openssh.com", str(closed)), want: INVALID },
  ];
  await runProbes(t, sb, probes, c);

  await t.test("READ of 2^32-1 bytes is capped, not allocated", async (t) => {
    const r = await c.read(rh, 0, 0xffffffff);
    t.equal(r.data?.toString(), OLD);
  });

  await t.test("WRITE far beyond the file size limit is refused", async (t) => {
    const h = await c.openHandle("big.gpg", W_CT);
    await expectRefused(t, sb, () => c.write(h, 2 ** 50, "x"), { status: FX.FAILURE, msg: /larger than the limit/ });
    // A refused WRITE leaves a hole the client will not fill: the upload is never published (issue 17).
    const closed = await c.close(h);
    t.equal(closed.status?.code, FX.FAILURE, "CLOSE fails after a refused WRITE");
    t.match(closed.status?.message, /'big\.gpg' was not stored: a write failed/);
    t.notOk(fs.existsSync(path.join(sb.root, "big.gpg")), "nothing published");
  });

  await t.test("replies come back in request order with the ids as sent, even repeated or extreme ones", async (t) => {
    const ids = [0, 0xffffffff, 7, 7, 7, 0x80000000, 1, 0];
    const start = c.order.length;
    ids.forEach((id, i) => c.sendRaw(packet(T.STAT, u32(id), str(i % 2 ? "existing.gpg" : "nope"))));
    const sentinel = await c.realpath(".");
    t.equal(sentinel.type, T.NAME);
    t.same(c.order.slice(start, start + ids.length), ids, "ids echoed, in order");
    c.unclaimed.length = 0;
  });
  await hangUp(t, c);
});

const FLOOD = size("SFTP_FLOOD_OPENS", 100_000, 2_000);
t.test(`33: ${FLOOD} OPENs are bounded by the handle limit; memory stays bounded`, async (t) => {
  const sb = world(t);
  const c = await connect(t, sb);
  const N = FLOOD;
  const started = Date.now();
  const WINDOW = 512;
  let handles = 0;
  let refusedQuota = 0;
  let other = "";
  const inFlight = new Set<Promise<void>>();
  for (let i = 0; i < N; i++) {
    // Every tenth OPEN would create a new file; the rest read an existing one.
    const p = (i % 10 === 0 ? c.open(`flood-${i}.gpg`, W_CT) : c.open("existing.gpg", PF.READ)).then((r) => {
      if (r.handle) handles++;
      else if (r.status?.code === FX.FAILURE && /at most \d+ (handles|uploads)/.test(r.status.message)) refusedQuota++;
      else other ||= describe(r);
    });
    const tracked = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= WINDOW) await Promise.race(inFlight);
    if (i % 2000 === 0) await c.drain();
  }
  await Promise.all(inFlight);
  const peakKiB = c.peakRssKiB() ?? 0;
  t.equal(other, "", "every OPEN got a handle or the limit's message");
  t.ok(handles > 0 && handles <= 4096, `handles given out: ${handles} (bounded by the configured limit)`);
  t.equal(handles + refusedQuota, N, "every OPEN answered");
  t.comment(`${N} OPENs answered in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  t.ok(peakKiB > 0 && peakKiB < 200 * 1024, `server peak RSS ${Math.round(peakKiB / 1024)} MiB stays under 200 MiB`);
  // Besides the session's lock owner file, one file may be made ahead of the next OPEN (vault/tmpfiles.ts).
  const tmpFiles = fs.readdirSync(path.join(sb.state, "tmp")).flatMap((d) => fs.readdirSync(path.join(sb.state, "tmp", d))).filter((n) => n !== OWNER_FILE);
  t.ok(tmpFiles.length <= handles + 1, `temporary files (${tmpFiles.length}) bounded by the open handles (and one made ahead)`);
  t.equal((await c.realpath(".")).type, T.NAME, "still serving");
  await hangUp(t, c);
  t.same(fs.readdirSync(sb.root).filter((n) => n.startsWith("flood-")), [], "no upload left open was published");
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "all temporary files removed at the end");
});

// ---------------------------------------------------------------------------------------------
// 34. The server's own temporary files can be neither named nor hit.
t.test("34: names that look like the server's temporary files", async (t) => {
  const sb = world(t);
  const probes: Probe[] = [
    { name: "OPEN into state/tmp by a relative path", send: (c) => c.open("../root.state/tmp/x", W_CT), want: OUTSIDE },
    { name: "OPEN into state/tmp by an absolute path", send: (c, sb) => c.open(`${sb.state}/tmp/1`, W_CT), want: OUTSIDE },
    { name: "OPENDIR of state/tmp", send: (c, sb) => c.opendir(`${sb.state}/tmp`), want: OUTSIDE },
    { name: "STAT of state", send: (c, sb) => c.stat(sb.state), want: OUTSIDE },
    { name: "REALPATH into state", send: (c, sb) => c.realpath(`${sb.state}/locks`), want: OUTSIDE },
    { name: "STAT of the audit log", send: (c, sb) => c.stat(sb.audit), want: OUTSIDE },
  ];
  const c = await runProbes(t, sb, probes);

  await t.test("uploads named like temporary files are ordinary files and never collide", async (t) => {
    const names = ["1", "2", ".tmp", ".part", "root.state", ".validate-backup"];
    const hs = await Promise.all(names.map((n) => c.openHandle(n, W_CT)));
    await Promise.all(hs.map((h, i) => c.write(h, 0, `bytes of ${names[i]}`)));
    for (const h of hs) t.equal((await c.close(h)).status?.code, FX.OK);
    await c.settle();
    for (const n of names) t.equal(fs.readFileSync(path.join(sb.root, n), "utf8"), `bytes of ${n}`, `${n} has its own bytes`);
  });

  await t.test("two uploads of one new name in one session: the second CLOSE fails, the first one's bytes stay", async (t) => {
    const a = await c.openHandle("twice.gpg", W_CT);
    const b = await c.openHandle("twice.gpg", W_CT);
    await c.write(a, 0, "first");
    await c.write(b, 0, "second, longer");
    t.equal((await c.close(a)).status?.code, FX.OK);
    await c.settle();
    const snap = snapshotAll(sb);
    await expectRefused(t, sb, () => c.close(b), EXISTS);
    t.same(snapshotAll(sb), snap);
    t.equal(fs.readFileSync(path.join(sb.root, "twice.gpg"), "utf8"), "first");
  });
  await hangUp(t, c);
});

// ---------------------------------------------------------------------------------------------
// 35. Read-only mode: every write-class request refused, including a zero-length create.
t.test("35: read-only mode refuses every write-class request (CVE-2017-15906)", async (t) => {
  const sb = world(t, { access: "read-only" });
  const RO = DENIED(/^read-only: /);
  const viaReadHandle = (send: (c: SftpClient, h: Buffer) => Promise<Reply>): Probe["send"] => async (c) => send(c, await readHandle(c, "existing.gpg"));
  const ext = (name: string, ...fields: Buffer[]): Probe["send"] => (c) => c.extended(name, ...fields);
  const opens: Array<[string, number]> = [
    ["WRITE|CREAT (zero-length create)", PF.WRITE | PF.CREAT],
    ["CREAT alone", PF.CREAT],
    ["READ|CREAT", PF.READ | PF.CREAT],
    ["TRUNC alone on an existing file", PF.TRUNC],
    ["READ|TRUNC on an existing file", PF.READ | PF.TRUNC],
    ["APPEND alone", PF.APPEND],
    ["READ|APPEND", PF.READ | PF.APPEND],
    ["EXCL alone", PF.EXCL],
    ["WRITE alone", PF.WRITE],
    ["WRITE|CREAT|TRUNC", W_CT],
  ];
  const probes: Probe[] = [
    ...opens.flatMap(([label, f]): Probe[] => [
      { name: `OPEN new ${label}`, send: (c) => c.open("new.gpg", f), want: RO },
      { name: `OPEN existing ${label}`, send: (c) => c.open("existing.gpg", f), want: RO },
    ]),
    { name: "MKDIR", send: (c) => c.mkdir("newdir"), want: RO },
    { name: "MKDIR of an existing directory", send: (c) => c.mkdir("dir"), want: RO },
    { name: "RMDIR", send: (c) => c.rmdir("empty"), want: RO },
    { name: "REMOVE", send: (c) => c.remove("existing.gpg"), want: RO },
    { name: "RENAME", send: (c) => c.rename("existing.gpg", "moved.gpg"), want: RO },
    { name: "SETSTAT perm", send: (c) => c.setstat("existing.gpg", { perm: 0o600 }), want: RO },
    { name: "SETSTAT with no attributes", send: (c) => c.setstat("existing.gpg", {}), want: RO },
    { name: "SETSTAT size", send: (c) => c.setstat("existing.gpg", { size: 0 }), want: RO },
    { name: "FSETSTAT on a read handle", send: viaReadHandle((c, h) => c.fsetstat(h, { size: 0 })), want: RO },
    { name: "WRITE on a read handle", send: viaReadHandle((c, h) => c.write(h, 0, "x")), want: RO },
    { name: "SYMLINK", send: (c) => c.symlink("/etc/passwd", "l"), want: RO },
    { name: "posix-rename@openssh.com", send: ext("posix-rename@openssh.com", str("existing.gpg"), str("m.gpg")), want: RO },
    { name: "hardlink@openssh.com", send: ext("hardlink@openssh.com", str("existing.gpg"), str("h.gpg")), want: RO },
    { name: "lsetstat@openssh.com", send: ext("lsetstat@openssh.com", str("existing.gpg"), attrs({ perm: 0o600 })), want: RO },
    { name: "copy-data", send: viaReadHandle((c, h) => c.extended("copy-data", str(h), u64(0), u64(0), str(h), u64(0))), want: RO },
  ];
  const c = await runProbes(t, sb, probes);
  await t.test("reading still works", async (t) => {
    t.equal((await c.get("existing.gpg")).toString(), OLD);
    const d = await c.opendir("dir");
    t.same((await c.readdir(d.handle!)).names?.map((n) => n.name).sort(), ["inner.gpg"]);
  });
  await hangUp(t, c);
  t.same(fs.readdirSync(path.join(sb.state, "tmp")), [], "not even a temporary file was made");
});

// ---------------------------------------------------------------------------------------------
// 37. A directory one session created stays put once others have filled it.
t.test("37: a session cannot rename or remove its own directory after another session filled it", async (t) => {
  const sb = world(t);
  const a = await connect(t, sb);
  t.equal((await a.mkdir("x", { perm: 0o750 })).status?.code, FX.OK, "session A creates x");
  const b = await connect(t, sb);
  await upload(b, "x/from-b.gpg", "B's bytes\n");
  await hangUp(t, b);
  const posix = (p: string, q: string): Probe["send"] => (c) => c.extended("posix-rename@openssh.com", str(p), str(q));
  const CANNOT = DENIED(/^append-only: .*cannot be (removed|renamed)|directories cannot be removed/);
  await runProbes(
    t,
    sb,
    [
      { name: "RENAME x", send: (c) => c.rename("x", "y"), want: CANNOT },
      { name: "posix-rename x", send: posix("x", "y"), want: CANNOT },
      { name: "RMDIR x", send: (c) => c.rmdir("x"), want: CANNOT },
      { name: "REMOVE x", send: (c) => c.remove("x"), want: CANNOT },
      { name: "REMOVE B's file in x", send: (c) => c.remove("x/from-b.gpg"), want: CANNOT },
      { name: "RENAME B's file in x", send: (c) => c.rename("x/from-b.gpg", "x/mine.gpg"), want: CANNOT },
    ],
    a,
  );
  await hangUp(t, a);
  t.equal(fs.readFileSync(path.join(sb.root, "x/from-b.gpg"), "utf8"), "B's bytes\n", "B's file is where B put it");
  t.equal(sha(fs.readFileSync(path.join(sb.root, "existing.gpg"))), sha(OLD));
});

// ---------------------------------------------------------------------------------------------
// Issue 16, item 4: a directory obeys the name rules of a file, and never counts as a set member.
t.test("16.4: MKDIR of a name the duplicity profile refuses as a file, or of any backup file's name, is refused", async (t) => {
  const sb = world(t);
  const day = 86_400_000;
  const start = Date.UTC(2025, 0, 1);
  const [T0, T1, T2] = [0, 1, 2].map((i) => ts(start + i * day)) as [string, string, string];
  plant(sb, "h", chain(start, 1), Date.now() - day); // full T0, inc T0->T1, both finished
  const future = ts(Date.now() + 2 * day);
  const MKDIR = (name: string): Probe["send"] => (c) => c.mkdir(`h/${name}`, { perm: 0o750 });
  await runProbes(t, sb, [
    { name: "dated in the future", send: MKDIR(`duplicity-full.${future}.vol1.difftar.gpg`), want: DENIED(/in the future/) },
    { name: "a second suffix of a stored file", send: MKDIR(`duplicity-full.${T0}.vol1.difftar.gz`), want: DENIED(/another suffix/) },
    { name: "an addition to a finished set", send: MKDIR(`duplicity-full.${T0}.vol9.difftar.gpg`), want: DENIED(/adds to a finished backup set/) },
    { name: "a taken incremental start", send: MKDIR(`duplicity-inc.${T0}.to.${T2}.manifest.gpg`), want: DENIED(/another incremental set already starts/) },
    { name: "a duplicity-like name duplicity 0.8 does not write", send: MKDIR("df.k3x9.m"), want: DENIED(/not a name duplicity 0\.8 writes/) },
    // As a file this manifest would be accepted; as a directory it would "finish" a set, or make
    // every later prune fail with EISDIR: no directory ever takes a backup file's name.
    { name: "a backup file's name the profile would accept", send: MKDIR(`duplicity-inc.${T1}.to.${T2}.manifest.gpg`), want: DENIED(/named like a backup file, never a directory/) },
  ]);
  const c = await connect(t, sb);
  t.equal((await c.mkdir("h/sub", { perm: 0o750 })).status?.code, FX.OK, "other names are still directories");
  await hangUp(t, c);
});

t.test("16.4: a directory planted under a manifest's name does not finish an interrupted set: its resume is accepted", async (t) => {
  const sb = world(t);
  const T = ts(Date.UTC(2025, 0, 1));
  const set = fullSet(T, { vols: 2, manifest: false });
  plant(sb, "h", set, Date.now() - 3_600_000);
  // Made before this rule existed (or by root): a directory named like the set's manifest.
  fs.mkdirSync(path.join(sb.root, "h", `duplicity-full.${T}.manifest.gpg`));
  const c = await connect(t, sb);
  const vol2 = `h/duplicity-full.${T}.vol2.difftar.gpg`;
  const r = await c.put(vol2, "the resumed volume 2\n");
  t.equal(r.status?.code, FX.OK, `the last volume of the unfinished set may be sent again (${describe(r)})`);
  await hangUp(t, c);
  t.equal(fs.readFileSync(path.join(sb.root, vol2), "utf8"), "the resumed volume 2\n");
});
