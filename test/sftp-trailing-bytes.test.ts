// Bytes after a request's last field are ignored, as OpenSSH's sftp-server ignores them (issue 20,
// items 1 and 4): rclone's pkg/sftp sends a file's short last WRITE in a longer message. Every
// request type the server knows is sent twice, to two identical sandboxes, once as it is and once
// with trailing bytes that would read as plausible fields (a string, a count, attribute flags); the
// answers and the trees must be the same, and each answer must show that the request's last field
// was read (the permissions asked, the data written, the length read, the second path...), so the
// tolerance cannot hide a decoder that stops one field early. A declared length that points past
// the end of the message is still refused.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { auditLines, sandbox, snapshot, type Sandbox } from "./helpers/env.js";
import { SftpClient, FX, PF, T, u32, u64, str, attrs, describe, type Reply } from "./helpers/sftp-client.js";

/** Looks like fields: a string "evil", a huge count, every attribute flag. */
const TRAILER = Buffer.concat([str("evil"), u32(0xffffffff), u32(0x8000000f), Buffer.alloc(9, 0x41)]);
const W_CT = PF.WRITE | PF.CREAT | PF.TRUNC;

/** What a reply says, without what differs between two sandboxes (their paths, the clock). */
function seen(r: Reply, sb: Sandbox): string {
  const norm = (s: string) => s.split(sb.root).join("<root>");
  if (r.status) return norm(describe(r));
  if (r.handle) return `HANDLE(${r.handle.length} bytes)`;
  if (r.data) return `DATA ${JSON.stringify(r.data.toString())}`;
  if (r.names) return `NAME ${r.names.map((n) => norm(n.name)).join(",")}`;
  // A time this script set is shown; the clock's own (the moment of creation) is not.
  const mtime = (r.attrs?.mtime ?? 0) < 1_700_000_000 ? r.attrs?.mtime : "now";
  if (r.attrs) return `ATTRS size=${r.attrs.size} perm=${(r.attrs.perm ?? 0).toString(8)} mtime=${mtime}`;
  return `type ${r.type}, ${r.body.length} bytes`;
}

interface Step {
  /** The request type (or extension) this step is about; every one of them must appear. */
  covers: string;
  send: (c: SftpClient, v: Record<string, Buffer>) => Promise<Reply>;
  /** What the reply must say, whether or not trailing bytes followed the request. */
  want: RegExp;
  /** Keep the reply's handle under this name for later steps. */
  keep?: string;
}

const STEPS: Step[] = [
  { covers: "REALPATH", send: (c) => c.realpath("d/.."), want: /^NAME <root>$/ },
  { covers: "MKDIR", send: (c) => c.mkdir("d", { perm: 0o750 }), want: /^OK/ },
  { covers: "LSTAT", send: (c) => c.lstat("d"), want: /perm=40750 / },
  { covers: "OPEN", send: (c) => c.open("d/f.gpg", W_CT, { perm: 0o600 }), want: /^HANDLE/, keep: "up" },
  { covers: "WRITE", send: (c, v) => c.write(v.up!, 0, "hello world"), want: /^OK/ },
  { covers: "FSETSTAT", send: (c, v) => c.fsetstat(v.up!, { atime: 1_600_000_000, mtime: 1_600_000_000 }), want: /^OK/ },
  { covers: "FSTAT", send: (c, v) => c.fstat(v.up!), want: /^ATTRS size=11 / },
  { covers: "READ", send: (c, v) => c.read(v.up!, 6, 4), want: /^DATA "worl"$/ },
  { covers: "fsync@openssh.com", send: (c, v) => c.extended("fsync@openssh.com", str(v.up!)), want: /^OK/ },
  { covers: "fstatvfs@openssh.com", send: (c, v) => c.extended("fstatvfs@openssh.com", str(v.up!)), want: /^type 201, 88 bytes$/ },
  { covers: "CLOSE", send: (c, v) => c.close(v.up!), want: /^OK/ },
  { covers: "STAT", send: (c) => c.stat("d/f.gpg"), want: /^ATTRS size=11 perm=100600 mtime=1600000000$/ }, // 0600 asked; 0640 is the default
  { covers: "SETSTAT", send: (c) => c.setstat("d/f.gpg", { atime: 1_650_000_000, mtime: 1_650_000_000 }), want: /^OK/ },
  { covers: "STAT", send: (c) => c.stat("d/f.gpg"), want: /mtime=1650000000$/ },
  { covers: "OPENDIR", send: (c) => c.opendir("d"), want: /^HANDLE/, keep: "dir" },
  { covers: "READDIR", send: (c, v) => c.readdir(v.dir!), want: /^NAME f\.gpg$/ },
  { covers: "CLOSE", send: (c, v) => c.close(v.dir!), want: /^OK/ },
  { covers: "RENAME", send: (c) => c.rename("d/f.gpg", "d/g.gpg"), want: /^OK/ },
  { covers: "posix-rename@openssh.com", send: (c) => c.extended("posix-rename@openssh.com", str("d/g.gpg"), str("d/h.gpg")), want: /^OK/ },
  { covers: "OPEN", send: (c) => c.open("d/h.gpg", PF.READ), want: /^HANDLE/, keep: "rd" },
  { covers: "READ", send: (c, v) => c.read(v.rd!, 0, 5), want: /^DATA "hello"$/ },
  { covers: "CLOSE", send: (c, v) => c.close(v.rd!), want: /^OK/ },
  { covers: "RMDIR", send: (c) => c.rmdir("d"), want: /^PERMISSION_DENIED: append-only: 'd': directories cannot be removed$/ },
  { covers: "READLINK", send: (c) => c.readlink("d/h.gpg"), want: /^PERMISSION_DENIED: 'd\/h\.gpg': symbolic links are never read/ },
  { covers: "SYMLINK", send: (c) => c.symlink("d/h.gpg", "d/link"), want: /\('d\/link' -> 'd\/h\.gpg'\)$/ },
  { covers: "statvfs@openssh.com", send: (c) => c.extended("statvfs@openssh.com", str("d")), want: /^type 201, 88 bytes$/ },
  { covers: "limits@openssh.com", send: (c) => c.extended("limits@openssh.com"), want: /^type 201, 32 bytes$/ },
  { covers: "expand-path@openssh.com", send: (c) => c.extended("expand-path@openssh.com", str("~/d")), want: /^NAME <root>\/d$/ },
  { covers: "home-directory", send: (c) => c.extended("home-directory", str("anyone")), want: /^NAME <root>$/ },
  // 2 uids and 1 gid asked: 2 and 1 empty names come back (4 + 2*4 + 4 + 1*4 bytes).
  { covers: "users-groups-by-id@openssh.com", send: (c) => c.extended("users-groups-by-id@openssh.com", str(Buffer.concat([u32(1), u32(2)])), str(u32(3))), want: /^type 201, 20 bytes$/ },
  { covers: "hardlink@openssh.com", send: (c) => c.extended("hardlink@openssh.com", str("d/h.gpg"), str("d/hard")), want: /^PERMISSION_DENIED: append-only: hard links/ },
  { covers: "copy-data", send: (c) => c.extended("copy-data"), want: /^PERMISSION_DENIED: append-only: copy-data/ },
  { covers: "lsetstat@openssh.com", send: (c) => c.extended("lsetstat@openssh.com", str("d/h.gpg"), attrs()), want: /^PERMISSION_DENIED: symbolic links/ },
  { covers: "REMOVE", send: (c) => c.remove("d/h.gpg"), want: /^OK/ },
  { covers: "LSTAT", send: (c) => c.lstat("d/h.gpg"), want: /^NO_SUCH_FILE/ },
];

/** Every request type of the draft the server serves, and every extension it knows. */
const ALL = [
  ...["OPEN", "CLOSE", "READ", "WRITE", "LSTAT", "FSTAT", "SETSTAT", "FSETSTAT", "OPENDIR", "READDIR", "REMOVE", "MKDIR", "RMDIR", "REALPATH", "STAT", "RENAME", "READLINK", "SYMLINK"],
  ...["posix-rename@openssh.com", "statvfs@openssh.com", "fstatvfs@openssh.com", "fsync@openssh.com", "limits@openssh.com", "expand-path@openssh.com", "home-directory"],
  ...["users-groups-by-id@openssh.com", "hardlink@openssh.com", "copy-data", "lsetstat@openssh.com"],
];

async function script(sb: Sandbox, trailer: Buffer): Promise<string[]> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  c.trailer = trailer;
  const kept: Record<string, Buffer> = {};
  const out: string[] = [];
  for (const step of STEPS) {
    const r = await step.send(c, kept);
    if (step.keep && r.handle) kept[step.keep] = r.handle;
    out.push(seen(r, sb));
  }
  const exit = await c.end();
  out.push(`exit ${exit.code}`);
  return out;
}

t.test("every request type is served as if its trailing bytes were absent", async (t) => {
  t.same([...new Set(STEPS.map((s) => s.covers))].sort(), [...ALL].sort(), "the script covers every request type and extension");
  const plain = sandbox(t);
  const trailed = sandbox(t);
  const without = await script(plain, Buffer.alloc(0));
  const withTrailer = await script(trailed, TRAILER);
  STEPS.forEach((step, i) => {
    t.match(without[i], step.want, `${step.covers}: ${without[i]}`);
    t.equal(withTrailer[i], without[i], `${step.covers} with ${TRAILER.length} trailing bytes: the same answer`);
  });
  t.equal(withTrailer.at(-1), "exit 0", "the session ends cleanly");
  t.same(snapshot(trailed.root), snapshot(plain.root), "the same tree");
  t.equal(fs.statSync(path.join(trailed.root, "d")).mode & 0o7777, 0o750, "MKDIR's attributes were read");

  const notes = auditLines(trailed).filter((l) => l.event === "trailing-bytes");
  t.equal(notes.length, 1, `noted once for the session, not once per packet (${STEPS.length} packets carried them)`);
  t.match(notes[0], { op: "realpath", bytes: TRAILER.length });
  t.equal(auditLines(plain).filter((l) => l.event === "trailing-bytes").length, 0, "a session without them has no such line");
  t.notOk(auditLines(trailed).some((l) => l.event === "refused" && /malformed/.test(String(l.reason))), "nothing refused as malformed");
});

t.test("a WRITE whose data ends before its message does: the declared length decides", async (t) => {
  const sb = sandbox(t);
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  const h = (await c.open("w.gpg", W_CT)).handle!;
  // As pkg/sftp sends a file's last chunk: 5 bytes declared, a whole chunk's buffer behind them.
  const r = await c.request(T.WRITE, str(h), u64(0), str("tail."), Buffer.alloc(31_072, 0x58));
  t.equal(r.status?.code, FX.OK, describe(r));
  t.equal((await c.close(h)).status?.code, FX.OK);
  await c.settle();
  t.equal(fs.readFileSync(path.join(sb.root, "w.gpg"), "utf8"), "tail.", "only the declared bytes are stored");
  await c.end();
});

t.test("a declared length past the end of the message is still refused", async (t) => {
  const sb = sandbox(t, { files: { "kept.gpg": "kept\n" } });
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  const h = (await c.open("w.gpg", W_CT)).handle!;
  const cases: Array<[string, () => Promise<Reply>]> = [
    ["WRITE whose data length is one more than the bytes left", () => c.request(T.WRITE, str(h), u64(0), u32(6), Buffer.from("12345"))],
    ["STAT whose path length runs past the message", () => c.request(T.STAT, u32(100), Buffer.from("kept.gpg"))],
    ["SETSTAT whose attributes stop half way", () => c.request(T.SETSTAT, str("w.gpg"), u32(0x8), u32(1))],
    ["OPEN without its attributes", () => c.request(T.OPEN, str("n.gpg"), u32(W_CT))],
  ];
  for (const [name, send] of cases) {
    const r = await send();
    t.equal(r.status?.code, FX.BAD_MESSAGE, `${name}: ${describe(r)}`);
    t.match(r.status?.message, /runs past the end of the packet/);
  }
  t.equal((await c.close(h)).status?.code, FX.OK);
  await c.settle();
  t.equal(fs.readFileSync(path.join(sb.root, "w.gpg"), "utf8"), "", "the refused WRITE stored nothing");
  t.notOk(fs.existsSync(path.join(sb.root, "n.gpg")));
  await c.end();
});
