// Real SFTP clients against our server, which runs as the unprivileged test user: OpenSSH sftp and
// scp (SFTP mode) through fake-ssh, paramiko over a socketpair, and restic's sftp backend. Every
// refused operation must leave what existed byte-identical, with an audit line saying why.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, snapshot, snapshotAll, auditLines, run, FAKE_SSH, TOP, type Sandbox, type Snap, type AuditLine, type Teardownable } from "./helpers/env.js";
import { FULL_ONLY } from "./helpers/scale.js";

t.setTimeout(15 * 60 * 1000); // restic derives its key with scrypt on every run: slow on a busy machine

const sha = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");

function scratch(t: Teardownable): string {
  const d = fs.mkdtempSync("/tmp/vb-sftp-local-");
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Keys of `after` that are new, and keys of `before` whose entry changed or vanished. */
function diff(before: Snap, after: Snap): { added: string[]; changed: string[] } {
  return {
    added: Object.keys(after).filter((k) => !(k in before)),
    changed: Object.keys(before).filter((k) => after[k] !== before[k]),
  };
}

function refusals(sb: Sandbox): AuditLine[] {
  return auditLines(sb).filter((l) => l.event === "refused");
}

function sessionEnds(sb: Sandbox): AuditLine[] {
  return auditLines(sb).filter((l) => l.event === "session-end");
}

const sftpArgv = (batch: string) => ["sftp", "-S", FAKE_SSH, "-b", batch, "x:"];
const scpArgv = (...args: string[]) => ["scp", "-S", FAKE_SSH, ...args];

t.test("OpenSSH sftp -b: put, put -p, get, ls -l, mkdir, df; rm, rename, chmod, ln -s, put over existing are refused", async (t) => {
  const sb = sandbox(t, { files: { "existing.txt": "stored before\n", "sub/keep.txt": "keep\n" } });
  const local = scratch(t);
  const big = crypto.randomBytes(3 * 1024 * 1024 + 123);
  fs.writeFileSync(path.join(local, "big.bin"), big);
  fs.writeFileSync(path.join(local, "small.txt"), "small\n", { mode: 0o644 });
  fs.utimesSync(path.join(local, "small.txt"), 1_600_000_000, 1_600_000_000);
  fs.writeFileSync(
    path.join(local, "batch"),
    [
      "put big.bin up.bin",
      "put -p small.txt kept.txt",
      "get up.bin back.bin",
      "ls -l",
      "mkdir newdir",
      "put small.txt newdir/inner.txt",
      "df",
      "-rm existing.txt",
      "-rename up.bin existing.txt",
      "-chmod 600 existing.txt",
      "-ln -s existing.txt link",
      "-put small.txt existing.txt",
      "-rmdir sub",
      "",
    ].join("\n"),
  );
  const before = snapshotAll(sb);
  const r = await run(sftpArgv("batch"), { env: sb.sshEnv, cwd: local }, { timeoutMs: 240_000 });
  const out = r.stdout.toString();
  t.equal(r.code, 0, r.stderr);

  t.ok(fs.readFileSync(path.join(local, "back.bin")).equals(big), "get brings back the bytes put");
  t.ok(fs.readFileSync(path.join(sb.root, "up.bin")).equals(big), "put stores the bytes");
  const kept = fs.statSync(path.join(sb.root, "kept.txt"));
  t.equal(kept.mode & 0o7777, 0o640, "put -p: permissions kept, masked to 0640");
  t.equal(Math.floor(kept.mtimeMs / 1000), 1_600_000_000, "put -p: mtime kept");
  t.match(out, /up\.bin/, "ls -l lists the upload");
  t.match(out, /-rw-r-----.*kept\.txt/, "ls -l shows the masked mode");
  t.match(out, /Avail/, "df answers");
  t.equal(fs.readFileSync(path.join(sb.root, "newdir/inner.txt"), "utf8"), "small\n");

  const d = diff(before, snapshotAll(sb));
  t.same(d.changed.filter((k) => k !== "root/."), [], "nothing that existed changed (existing.txt byte-identical, sub kept)");
  t.same(d.added.sort(), ["root/kept.txt", "root/newdir", "root/newdir/inner.txt", "root/up.bin"], "only the uploads appeared");

  const refused = refusals(sb);
  for (const [op, code] of [
    ["remove", "IMMUTABLE"],
    ["posix-rename", "EXISTS"],
    ["setstat", "IMMUTABLE"],
    ["symlink", "NOT_ALLOWED"],
    ["open", "EXISTS"],
    ["rmdir", "IMMUTABLE"],
  ] as const)
    t.ok(
      refused.some((l) => l.op === op && l.code === code),
      `${op} refused with ${code} and audited`,
    );
  t.match(r.stderr, /append-only: 'existing\.txt' cannot be removed/, "the reason reaches the user");
  t.match(r.stderr, /append-only: 'existing\.txt' already exists and cannot be overwritten/);
  const pub = auditLines(sb).find((l) => l.event === "publish" && l.path === "up.bin");
  t.match(pub, { size: big.length, sha256: sha(big) }, "publish audited with size and SHA-256");
  t.match(sessionEnds(sb).at(-1), { exit: 0, published: 3, refused: 6 });
});

t.test("OpenSSH scp (SFTP mode): upload, -r, -p, download; over an existing file refused", async (t) => {
  const sb = sandbox(t, { files: { "existing.txt": "stored before\n" } });
  const local = scratch(t);
  const big = crypto.randomBytes(1024 * 1024 + 7);
  fs.writeFileSync(path.join(local, "big.bin"), big);
  fs.mkdirSync(path.join(local, "tree/a/b"), { recursive: true });
  fs.writeFileSync(path.join(local, "tree/a/one"), "one\n", { mode: 0o755 });
  fs.writeFileSync(path.join(local, "tree/a/b/two"), "two\n");
  fs.writeFileSync(path.join(local, "p.txt"), "preserved\n");
  fs.utimesSync(path.join(local, "p.txt"), 1_500_000_000, 1_500_000_000);
  const before = snapshotAll(sb);
  const opts = { env: sb.sshEnv, cwd: local };

  let r = await run(scpArgv("big.bin", "x:big.bin"), opts);
  t.equal(r.code, 0, `upload: ${r.stderr}`);
  r = await run(scpArgv("-r", "tree", "x:"), opts);
  t.equal(r.code, 0, `-r: ${r.stderr}`);
  r = await run(scpArgv("-p", "p.txt", "x:p.txt"), opts);
  t.equal(r.code, 0, `-p: ${r.stderr}`);
  r = await run(scpArgv("x:big.bin", "down.bin"), opts);
  t.equal(r.code, 0, `download: ${r.stderr}`);
  r = await run(scpArgv("p.txt", "x:existing.txt"), opts);
  t.not(r.code, 0, "upload over an existing file fails");
  t.match(r.stderr, /already exists and cannot be overwritten/);

  t.ok(fs.readFileSync(path.join(local, "down.bin")).equals(big), "download is byte-identical");
  t.ok(fs.readFileSync(path.join(sb.root, "big.bin")).equals(big));
  t.equal(fs.readFileSync(path.join(sb.root, "tree/a/b/two"), "utf8"), "two\n");
  t.equal(fs.statSync(path.join(sb.root, "tree/a/one")).mode & 0o7777, 0o640, "never executable");
  t.equal(fs.statSync(path.join(sb.root, "tree/a")).mode & 0o7777, 0o750, "directories masked to 0750");
  t.equal(Math.floor(fs.statSync(path.join(sb.root, "p.txt")).mtimeMs / 1000), 1_500_000_000, "-p keeps the mtime");
  const d = diff(before, snapshotAll(sb));
  t.same(d.changed.filter((k) => k !== "root/."), [], "existing.txt byte-identical");
  t.same(d.added.sort(), ["root/big.bin", "root/p.txt", "root/tree", "root/tree/a", "root/tree/a/b", "root/tree/a/b/two", "root/tree/a/one"]);
  t.ok(refusals(sb).some((l) => l.op === "open" && l.code === "EXISTS" && /existing\.txt/.test(String(l.path))));
});

t.test("paramiko: chdir down from /, put, get, listdir, stat; remove of a stored file refused", async (t) => {
  const sb = sandbox(t, { files: { "existing.txt": "stored before\n" } });
  const local = scratch(t);
  const data = crypto.randomBytes(700 * 1024);
  fs.writeFileSync(path.join(local, "p.bin"), data);
  const comps = sb.root.split("/").filter(Boolean);
  const steps = [
    ["chdir", "/"],
    ...comps.map((c) => ["chdir", c]),
    ["getcwd"],
    ["mkdir", `/${comps[0]!}`], // exists above the root: a plain failure, as paramiko users expect
    ["put", path.join(local, "p.bin"), "p.bin"],
    ["listdir", "."],
    ["stat", "p.bin"],
    ["get", "p.bin", path.join(local, "back.bin")],
    ["remove", "existing.txt"],
    ["put", path.join(local, "p.bin"), "existing.txt"],
    ["listdir", "/"],
  ];
  const before = snapshotAll(sb);
  const r = await run(["/usr/bin/python3", path.join(TOP, "test/helpers/paramiko-sftp.py"), JSON.stringify(steps), "--", FAKE_SSH, "-s", "x", "sftp"], { env: sb.sshEnv }, { timeoutMs: 240_000 });
  t.equal(r.code, 0, r.stderr);
  const { results, exit } = JSON.parse(r.stdout.toString()) as { results: Array<{ ok?: unknown; error?: string; errno?: number }>; exit: number };
  t.equal(exit, 0, "the server ended cleanly");
  const at = (i: number) => results[comps.length + 1 + i]!;
  results.slice(0, comps.length + 1).forEach((x, i) => t.notOk(x.error, `chdir ${i}: ${x.error ?? "ok"}`));
  t.equal(at(0).ok, sb.root, "getcwd is the root");
  t.match(at(1), { error: /already exists/ });
  t.match(at(2).ok, { size: data.length }, "put (paramiko checks the size itself)");
  t.same(at(3).ok, ["existing.txt", "p.bin"]);
  t.match(at(4).ok, { size: data.length });
  t.ok(fs.readFileSync(path.join(local, "back.bin")).equals(data), "get is byte-identical");
  t.notOk(at(5).error, "get");
  t.match(at(6), { errno: 13, error: /append-only: 'existing\.txt' cannot be removed/ });
  t.match(at(7), { error: /already exists and cannot be overwritten/ });
  t.match(at(8), { errno: 13, error: /outside the backup root/ });
  const d = diff(before, snapshotAll(sb));
  t.same(d.changed, [], "nothing that existed changed");
  t.same(d.added, ["root/p.bin"]);
  t.ok(refusals(sb).some((l) => l.op === "remove" && l.code === "IMMUTABLE"));
});

// restic's scrypt costs minutes of CI per run: the full run only.
t.test("restic 0.14 sftp backend: init, backup twice, check, restore; forget --prune removes nothing", FULL_ONLY, async (t) => {
  const sb = sandbox(t);
  const local = scratch(t);
  const data = path.join(local, "data");
  fs.mkdirSync(path.join(data, "d"), { recursive: true });
  const big = crypto.randomBytes(2 * 1024 * 1024);
  fs.writeFileSync(path.join(data, "big.bin"), big);
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(data, "d", `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
  const env = { ...sb.sshEnv, RESTIC_PASSWORD: "test password", RESTIC_CACHE_DIR: path.join(local, "cache") };
  const restic = (...args: string[]) =>
    run(["restic", "-r", `sftp:x:${sb.root}/repo`, "-o", `sftp.command=${FAKE_SSH} -s x sftp`, ...args], { env, cwd: local }, { timeoutMs: 300_000 });

  let r = await restic("init");
  t.equal(r.code, 0, `init: ${r.stderr}`);
  r = await restic("backup", "--host", "h", data);
  t.equal(r.code, 0, `backup 1: ${r.stderr}`);
  fs.writeFileSync(path.join(data, "d", "later.txt"), "added for the second backup\n");
  r = await restic("backup", "--host", "h", data);
  t.equal(r.code, 0, `backup 2: ${r.stderr}`);
  r = await restic("check");
  t.equal(r.code, 0, `check: ${r.stderr}`);
  r = await restic("restore", "latest", "--target", path.join(local, "restore"));
  t.equal(r.code, 0, `restore: ${r.stderr}`);
  t.same(snapshot(path.join(local, "restore", data)), snapshot(data), "restore is byte-identical");

  const stored = snapshot(path.join(sb.root, "repo"));
  r = await restic("forget", "--keep-last", "1", "--prune");
  t.not(r.code, 0, "forget --prune cannot delete and says so");
  const after = snapshot(path.join(sb.root, "repo"));
  // Files only: a directory's entry changes with the subdirectories added to it.
  const lost = Object.keys(stored).filter((k) => stored[k]!.startsWith("100") && after[k] !== stored[k]);
  t.same(lost, [], "every file the repository held is still there, byte-identical");
  t.ok(refusals(sb).some((l) => l.op === "remove" && l.code === "IMMUTABLE"), "the removals were refused and audited");
  r = await restic("snapshots", "--json");
  t.equal((JSON.parse(r.stdout.toString()) as unknown[]).length, 2, "both snapshots are still there");
});
