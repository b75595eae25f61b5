// Real rsync pushes through the gate: what the vault publishes from staging and what it does not
// (existing names of a single-file push, links, FIFOs, exec and setuid bits).
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { sandbox, snapshotAll } from "./helpers/env.js";
import { rsyncClient, localTree, contents, leftovers, lastSession } from "./helpers/rsync-client.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

const OLD = { "d/existing.gpg": "old volume\n", "keep.gpg": "keep\n" };

t.test("a single-file push onto an existing name fails loudly; onto a new name it is stored", async (t) => {
  const sb = sandbox(t, { files: OLD });
  const src = localTree(t, { "vol1.gpg": "resent, re-encrypted\n", "vol2.gpg": "second\n" });
  const before = snapshotAll(sb);
  let r = await rsyncClient(sb, [path.join(src, "vol1.gpg"), `h:${sb.root}/d/existing.gpg`]);
  t.not(r.code, 0, "the client sees a failure");
  t.match(r.stderr, /validate-backup: append-only: 'd\/existing.gpg' already exists and cannot be overwritten/);
  t.match(lastSession(sb)[0], { decision: "allow" });
  t.match(lastSession(sb).find((l) => l.event === "error"), { code: "EXISTS" });
  t.same(snapshotAll(sb), before);

  r = await rsyncClient(sb, [path.join(src, "vol2.gpg"), `h:${sb.root}/d/vol2.gpg`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readFileSync(path.join(sb.root, "d/vol2.gpg"), "utf8"), "second\n");
  t.same(leftovers(sb), []);
});

t.test("links and FIFOs are never published; modes are masked", async (t) => {
  const sb = sandbox(t);
  const src = localTree(t, { "plain.gpg": "p\n", "exec.sh": "#!/bin/sh\n", "setuid": "s\n", "locked.gpg": "l\n", "ro/inside.gpg": "i\n" });
  fs.symlinkSync("/etc/passwd", path.join(src, "link"));
  fs.symlinkSync(sb.outside, path.join(src, "dirlink"));
  t.equal(spawnSync("mkfifo", [path.join(src, "fifo")]).status, 0);
  fs.chmodSync(path.join(src, "exec.sh"), 0o755);
  fs.chmodSync(path.join(src, "setuid"), 0o4755);
  fs.chmodSync(path.join(src, "locked.gpg"), 0o000);
  fs.chmodSync(path.join(src, "ro"), 0o555);
  const r = await rsyncClient(sb, ["-av", `${src}/`, "h:in/"]);
  t.equal(r.code, 23, "links and the FIFO were sent and not stored");
  for (const [f, why] of [["link", "symbolic link"], ["dirlink", "symbolic link"], ["fifo", "FIFO"]])
    t.match(r.stderr, `validate-backup: rsync: 'in/${f}' was not stored: ${why} (never published)`);
  t.same(Object.keys(contents(sb.root)).sort(), ["in/exec.sh", "in/locked.gpg", "in/plain.gpg", "in/ro/inside.gpg", "in/setuid"]);
  for (const [f, mode] of [["exec.sh", 0o640], ["setuid", 0o640], ["plain.gpg", 0o640], ["locked.gpg", 0o600]] as const)
    t.equal(fs.statSync(path.join(sb.root, "in", f)).mode & 0o7777, mode, `${f} stored as ${mode.toString(8)}`);
  const skipped = Object.fromEntries(lastSession(sb).filter((l) => l.event === "skipped").map((l) => [l.path, l.reason]));
  t.match(skipped, { "in/link": /symbolic link/, "in/dirlink": /symbolic link/, "in/fifo": /FIFO/ });
  t.same(leftovers(sb), [], "staging removed even with a 0555 directory in it");
});

t.test("every refused upload fails the push with exit 23 and the reason (issue 17, item 2)", async (t) => {
  let sb = sandbox(t, { config: { encryption: { required: true } } });
  const src = localTree(t, { "plain.txt": "not encrypted\n" });
  const before = snapshotAll(sb);
  let r = await rsyncClient(sb, [path.join(src, "plain.txt"), "h:"]);
  t.equal(r.code, 23, "a plaintext file refused by the guard: rsync's partial-transfer status");
  t.match(r.stderr, /validate-backup: rsync: 'plain\.txt' was not stored: .*plaintext/);
  t.match(lastSession(sb).at(-1), { event: "session-end", exit: 23, published: 0 });
  t.same(snapshotAll(sb), before, "nothing stored");

  // A changed file under an existing name in a directory push; one with the same bytes (other times).
  sb = sandbox(t, { files: { "d/x.gpg": "x1\n", "d/same.gpg": "same\n" } });
  const dir = localTree(t, { "x.gpg": "x2 changed\n", "same.gpg": "same\n", "new.gpg": "new\n" });
  fs.utimesSync(path.join(dir, "same.gpg"), 1_000_000_000, 1_000_000_000);
  r = await rsyncClient(sb, ["-rt", `${dir}/`, "h:d/"]);
  t.equal(r.code, 23, "the changed file was sent and not stored");
  t.match(r.stderr, /validate-backup: rsync: 'd\/x\.gpg' was not stored: append-only: .*already exists/);
  t.notMatch(r.stderr, /same\.gpg/, "the identical one is skipped silently, as --ignore-existing would");
  t.equal(fs.readFileSync(path.join(sb.root, "d/x.gpg"), "utf8"), "x1\n", "the stored file is unchanged");
  t.equal(fs.readFileSync(path.join(sb.root, "d/new.gpg"), "utf8"), "new\n", "the new one is stored");

  // Only identical contents: exit 0.
  const same = localTree(t, { "same.gpg": "same\n" });
  r = await rsyncClient(sb, ["-rt", `${same}/`, "h:d/"]);
  t.equal(r.code, 0, r.stderr);
  t.same(leftovers(sb), []);
});

t.test("the rsync client never sees the staging area's path", async (t) => {
  const sb = sandbox(t);
  const src = localTree(t, { "a.gpg": "a\n", "sub/b.gpg": "b\n" });
  const r = await rsyncClient(sb, ["-avv", `${src}/`, "h:new/enc/"]);
  t.equal(r.code, 0, r.stderr);
  const said = r.stdout.toString() + r.stderr;
  t.notMatch(said, /staging|\.state/, "no internal path in rsync's messages");
  t.match(said, /created directory new\/enc/, "rsync names the destination as the client gave it");
  t.equal(fs.readFileSync(path.join(sb.root, "new/enc/sub/b.gpg"), "utf8"), "b\n");
});

t.test("limits.maxFileBytes: rsync gets --max-size and never receives a file over it; the push exits 23 (issue 16, item 6)", async (t) => {
  const sb = sandbox(t, { config: { limits: { maxFileBytes: 1000 } } });
  const src = localTree(t, { "big.gpg": crypto.randomBytes(300 * 1024), "ok.gpg": "small enough\n" });
  const before = snapshotAll(sb);
  let r = await rsyncClient(sb, ["--stats", path.join(src, "big.gpg"), "h:"]);
  t.equal(r.code, 23, "a file over the limit is a file sent and not stored");
  t.match(r.stderr, /validate-backup: rsync: 'big\.gpg' was not stored: larger than the limit of 1000 bytes per file/);
  const sent = Number(/Total bytes sent: ([\d,]+)/.exec(r.stdout.toString())?.[1]?.replace(/,/g, ""));
  t.ok(sent < 10_000, `its bytes were never sent (${sent} bytes in all)`);
  t.same(snapshotAll(sb), before);
  r = await rsyncClient(sb, ["-r", `${src}/`, "h:d/"]);
  t.equal(r.code, 23, "in a directory push too");
  t.equal(fs.readFileSync(path.join(sb.root, "d/ok.gpg"), "utf8"), "small enough\n", "the file within the limit is stored");
  t.notOk(fs.existsSync(path.join(sb.root, "d/big.gpg")));
  // A smaller --max-size of the client's own is kept (ours comes last, as the smaller of the two).
  sb.configure({ limits: { maxFileBytes: 1_000_000 } });
  r = await rsyncClient(sb, ["--max-size=1K", path.join(src, "big.gpg"), path.join(src, "ok.gpg"), "h:e/"]);
  t.equal(r.code, 23);
  t.match(r.stderr, /'big\.gpg' was not stored: larger than the limit of 1024 bytes per file/);
  t.equal(fs.readFileSync(path.join(sb.root, "e/ok.gpg"), "utf8"), "small enough\n");
  t.same(leftovers(sb), []);
});

t.test("--preallocate is refused: it would reserve space for bytes never sent (issue 16, item 6)", async (t) => {
  const sb = sandbox(t);
  const src = localTree(t);
  // A sparse file declared far larger than what it holds.
  fs.closeSync(fs.openSync(path.join(src, "sparse.gpg"), "w"));
  fs.truncateSync(path.join(src, "sparse.gpg"), 168 * 1024 * 1024);
  const before = snapshotAll(sb);
  const r = await rsyncClient(sb, ["-S", "--preallocate", path.join(src, "sparse.gpg"), "h:"]);
  t.not(r.code, 0);
  t.match(r.stderr, /validate-backup: rsync: option '--preallocate' is refused: --preallocate would reserve disk space for bytes never sent/);
  t.match(lastSession(sb)[0], { event: "request", decision: "deny", reason: /--preallocate/ });
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});
