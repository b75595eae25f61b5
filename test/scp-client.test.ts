// Real OpenSSH scp in legacy mode (-O) against our sink and source, through fake-ssh, as vbtest.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, auditLines, type Sandbox } from "./helpers/env.js";
import { scpClient } from "./helpers/scp-wire.js";

function local(sb: Sandbox, files: Record<string, string>): string {
  const dir = path.join(sb.dir, "local");
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), content);
  }
  return dir;
}

const read = (p: string) => fs.readFileSync(p, "utf8");

t.test("upload one file, then several with -p, then a tree with -r", async (t) => {
  const sb = sandbox(t, { files: { "d/old.gpg": "OLD" } });
  const src = local(sb, { "one.gpg": "one\n", "a.gpg": "A", "b.gpg": "B", "tree/x.gpg": "X", "tree/sub/y.gpg": "Y", "tree/empty/.keep": "" });
  const when = new Date(1_000_000_000 * 1000);
  fs.utimesSync(path.join(src, "b.gpg"), when, when);

  let r = await scpClient(sb, ["one.gpg", "host:d/"], src);
  t.equal(r.code, 0, r.stderr);
  t.equal(read(path.join(sb.root, "d/one.gpg")), "one\n");

  r = await scpClient(sb, ["-p", "a.gpg", "b.gpg", "host:d"], src);
  t.equal(r.code, 0, r.stderr);
  t.equal(read(path.join(sb.root, "d/a.gpg")), "A");
  const st = fs.statSync(path.join(sb.root, "d/b.gpg"));
  t.equal(st.mtimeMs, when.getTime(), "-p: times from the T line are applied to the new file");
  t.equal(st.mode & 0o7777, 0o640, "mode masked to 0640");

  r = await scpClient(sb, ["-r", "tree", "host:d/"], src);
  t.equal(r.code, 0, r.stderr);
  t.equal(read(path.join(sb.root, "d/tree/x.gpg")), "X");
  t.equal(read(path.join(sb.root, "d/tree/sub/y.gpg")), "Y");
  t.ok(fs.statSync(path.join(sb.root, "d/tree/empty")).isDirectory());
  t.equal(read(path.join(sb.root, "d/old.gpg")), "OLD");
  const published = auditLines(sb).filter((l) => l.event === "publish").map((l) => l.path);
  t.same(published.sort(), ["d/a.gpg", "d/b.gpg", "d/one.gpg", "d/tree/empty/.keep", "d/tree/sub/y.gpg", "d/tree/x.gpg"]);
});

t.test("upload over an existing file fails with a message, leaves it byte-identical, goes on", async (t) => {
  const sb = sandbox(t, { files: { "d/existing.gpg": "OLD BYTES" } });
  const src = local(sb, { "existing.gpg": "NEW BYTES, LONGER", "other.gpg": "other" });
  const before = snapshotAll(sb);

  let r = await scpClient(sb, ["existing.gpg", "host:d/"], src);
  t.not(r.code, 0);
  t.match(r.stderr, /append-only: 'd\/existing\.gpg' already exists and cannot be overwritten/);
  t.same(snapshotAll(sb), before, "nothing changed");

  // Named as the target itself: the bytes would land on it, whatever the C line says.
  r = await scpClient(sb, ["other.gpg", "host:d/existing.gpg"], src);
  t.not(r.code, 0);
  t.match(r.stderr, /'d\/existing\.gpg' already exists/);
  t.same(snapshotAll(sb), before, "nothing changed");

  // Two files, the first refused: the second is still delivered, the exit status says it.
  r = await scpClient(sb, ["existing.gpg", "other.gpg", "host:d"], src);
  t.not(r.code, 0);
  t.equal(read(path.join(sb.root, "d/other.gpg")), "other");
  t.equal(read(path.join(sb.root, "d/existing.gpg")), "OLD BYTES");
  const refused = auditLines(sb).filter((l) => l.event === "refused");
  t.equal(refused.length, 3);
  t.match(refused[0], { protocol: "scp", code: "EXISTS", path: "d/existing.gpg" });
});

t.test("download a file, a glob, a tree", async (t) => {
  const sb = sandbox(t, {
    files: { "d/a.gpg": "A", "d/b.gpg": "B", "d/c.txt": "C", "d/.hidden.gpg": "H", "d/sub/e.gpg": "E", },
  });
  const dl = path.join(sb.dir, "dl");
  fs.mkdirSync(dl);
  const before = snapshotAll(sb);

  let r = await scpClient(sb, ["host:d/a.gpg", dl]);
  t.equal(r.code, 0, r.stderr);
  t.equal(read(path.join(dl, "a.gpg")), "A");

  const glob = path.join(dl, "glob");
  fs.mkdirSync(glob);
  r = await scpClient(sb, ["host:d/*.gpg", glob]);
  t.equal(r.code, 0, r.stderr);
  t.same(fs.readdirSync(glob).sort(), ["a.gpg", "b.gpg"], "* matches no dot file and does not descend");

  fs.mkdirSync(path.join(dl, "tree"));
  r = await scpClient(sb, ["-r", "-p", "host:d", path.join(dl, "tree")]);
  t.equal(r.code, 0, r.stderr);
  t.same(fs.readdirSync(path.join(dl, "tree/d")).sort(), [".hidden.gpg", "a.gpg", "b.gpg", "c.txt", "sub"], "-r sends a tree whole, as scp does");
  t.equal(read(path.join(dl, "tree/d/sub/e.gpg")), "E");
  t.same(snapshotAll(sb), before, "downloads change nothing");
  t.ok(auditLines(sb).some((l) => l.event === "download" && l.path === "d/sub/e.gpg"));
});

t.test("download never follows a symbolic link", async (t) => {
  const sb = sandbox(t, { files: { "d/a.gpg": "A" } });
  fs.symlinkSync(path.join(sb.outside, "canary.txt"), path.join(sb.root, "d/link"));
  fs.symlinkSync(sb.outside, path.join(sb.root, "dirlink"));
  const dl = path.join(sb.dir, "dl");
  fs.mkdirSync(dl);
  const before = snapshotAll(sb);

  let r = await scpClient(sb, ["-r", "host:d", dl]);
  t.equal(r.code, 1);
  t.match(r.stderr, /'d\/link': a symbolic link, never followed/);
  t.same(fs.readdirSync(path.join(dl, "d")), ["a.gpg"]);

  r = await scpClient(sb, ["host:d/link", dl]);
  t.equal(r.code, 1);
  r = await scpClient(sb, ["host:dirlink/*", dl]);
  t.equal(r.code, 1);
  r = await scpClient(sb, ["host:dirlink/canary.txt", dl]);
  t.equal(r.code, 1);
  // The walk opens each directory with O_NOFOLLOW|O_DIRECTORY: on a link the kernel says ENOTDIR.
  t.match(r.stderr, /'dirlink\/canary\.txt': (.*symbolic link|a component of the path is not a directory)/);
  t.notOk(fs.existsSync(path.join(dl, "canary.txt")), "nothing from outside the root was sent");
  t.same(snapshotAll(sb), before);
});
