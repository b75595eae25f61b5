// Real rsync pushes through the gate (acceptance item 3): new files arrive, nothing that existed
// changes, refused options store nothing, a killed transfer leaves nothing partial.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, snapshotAll } from "./helpers/env.js";
import { rsyncClient, localTree, contents, leftovers, lastSession } from "./helpers/rsync-client.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

const OLD = { "d/existing.gpg": "old volume\n", "keep.gpg": "keep\n" };

t.test("a push of a tree adds the new files and only those", async (t) => {
  const sb = sandbox(t, { files: OLD });
  const src = localTree(t, { "a.gpg": "A\n", "sub/b.gpg": "B\n", "d/existing.gpg": "NEW BYTES\n", "d/new.gpg": "new\n" });
  const r = await rsyncClient(sb, ["-av", `${src}/`, "h:./"]);
  t.equal(r.code, 23, "the changed d/existing.gpg was sent and not stored");
  t.match(r.stderr, "validate-backup: rsync: 'd/existing.gpg' was not stored: append-only: the name already exists with other contents");
  t.same(contents(sb.root), {
    "a.gpg": contents(src)["a.gpg"],
    "d/existing.gpg": crypto.createHash("sha256").update(OLD["d/existing.gpg"]).digest("hex"),
    "d/new.gpg": contents(src)["d/new.gpg"],
    "keep.gpg": crypto.createHash("sha256").update(OLD["keep.gpg"]).digest("hex"),
    "sub/b.gpg": contents(src)["sub/b.gpg"],
  });
  for (const f of ["a.gpg", "sub/b.gpg", "d/new.gpg"]) t.equal(fs.statSync(path.join(sb.root, f)).mode & 0o7777, 0o640, `${f} is 0640`);
  const lines = lastSession(sb);
  t.match(lines[0], { event: "request", decision: "allow", command: "rsync --server -vlogDtpre.iLsfxCIvu . ./" });
  t.same(lines.filter((l) => l.event === "publish").map((l) => l.path).sort(), ["a.gpg", "d/new.gpg", "sub/b.gpg"]);
  t.match(lines.find((l) => l.event === "publish" && l.path === "a.gpg"), { size: 2, sha256: contents(src)["a.gpg"], via: "rsync" });
  t.match(lines.find((l) => l.event === "skipped"), { path: "d/existing.gpg", reason: "exists" });
  t.match(lines.at(-1), { event: "session-end", published: 3, skipped: 1, exit: 23 });
  t.same(leftovers(sb), [], "staging removed");
});

t.test("pushing again with changed contents (plain, --inplace, -P) leaves every existing file byte-identical", async (t) => {
  const sb = sandbox(t, { files: { "d/x.gpg": "x1\n", "d/y.gpg": "y1\n" } });
  const src = localTree(t, { "x.gpg": "x1\n", "y.gpg": "y1\n" });
  // Same bytes and times as stored: rsync never compares against the live tree (no --compare-dest,
  // issue 16 item 7), so they travel again and the publisher skips the names that exist.
  for (const f of ["x.gpg", "y.gpg"]) {
    const st = fs.statSync(path.join(sb.root, "d", f));
    fs.utimesSync(path.join(src, f), st.atime, st.mtime);
  }
  let r = await rsyncClient(sb, ["-av", "--stats", `${src}/`, "h:d/"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.toString(), /Number of regular files transferred: 2/, "unchanged files are sent again");
  t.same(
    lastSession(sb).filter((l) => l.event === "skipped").map((l) => [l.path, l.reason]).sort(),
    [["d/x.gpg", "exists, identical"], ["d/y.gpg", "exists, identical"]],
    "and skipped, silently: the same bytes are stored",
  );

  const before = snapshotAll(sb);
  fs.writeFileSync(path.join(src, "x.gpg"), "x2 changed and longer\n");
  fs.writeFileSync(path.join(src, "y.gpg"), "y2\n");
  // Times clearly apart from the stored ones: with the same size and second, rsync's quick check would
  // take y.gpg for unchanged and copy the stored file into staging (an identical file, skipped silently).
  for (const f of ["x.gpg", "y.gpg"]) fs.utimesSync(path.join(src, f), 2_000_000_000, 2_000_000_000);
  r = await rsyncClient(sb, ["-av", `${src}/`, "h:d/"]);
  t.equal(r.code, 23, "a directory push whose changed files were not stored fails (rsync's partial-transfer status)");
  t.same(snapshotAll(sb), before, "plain push: nothing changed");
  t.same(
    lastSession(sb).filter((l) => l.event === "skipped").map((l) => [l.path, l.reason]).sort(),
    [["d/x.gpg", "exists"], ["d/y.gpg", "exists"]],
  );
  for (const [opt, name] of [["--inplace", "--inplace"], ["-P", "--partial"]] as const) {
    r = await rsyncClient(sb, ["-av", opt, `${src}/`, "h:d/"]);
    t.not(r.code, 0, `${opt} refused`);
    t.match(r.stderr, new RegExp(`validate-backup: rsync: option '${name}' is refused: append-only`));
    t.match(lastSession(sb)[0], { event: "request", decision: "deny", reason: new RegExp(name) });
    t.same(snapshotAll(sb), before, `${opt}: nothing changed`);
  }
  t.same(leftovers(sb), []);
});

t.test("a push with --delete deletes nothing: refused before rsync starts", async (t) => {
  const sb = sandbox(t, { files: OLD });
  const src = localTree(t, { "only.gpg": "o\n" });
  const before = snapshotAll(sb);
  for (const opt of ["--delete", "--remove-source-files"]) {
    const r = await rsyncClient(sb, ["-av", opt, `${src}/`, "h:./"]);
    t.not(r.code, 0, opt);
    t.match(r.stderr, /validate-backup: rsync: option '--[a-z-]+' is refused: append-only: rsync may not delete anything/);
    const lines = lastSession(sb);
    t.match(lines[0], { event: "request", decision: "deny", reason: /may not delete/ });
    t.notOk(lines.some((l) => l.event === "rsync"), "rsync never started");
    t.same(snapshotAll(sb), before, `${opt}: nothing changed`);
  }
  t.ok(fs.existsSync(path.join(src, "only.gpg")), "--remove-source-files did not remove the client's file either");
});

t.test("a read-only key refuses every push", async (t) => {
  const sb = sandbox(t, { files: OLD, config: { access: "read-only" } });
  const src = localTree(t, { "a.gpg": "A\n" });
  const before = snapshotAll(sb);
  const r = await rsyncClient(sb, ["-av", `${src}/`, "h:./"]);
  t.not(r.code, 0);
  t.match(r.stderr, /validate-backup: read-only: this key cannot upload \(rsync push refused\)/);
  t.match(lastSession(sb)[0], { decision: "deny", code: "READ_ONLY" });
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});
