// rclone's connection pool (issue 20, item 2): rclone uploads over several SSH sessions and sets a
// file's modification time with SETSTAT afterwards, often on another session than the upload's.
// The one thing allowed there: atime and mtime, on a regular file this key published within the
// last hour (its arrival record: key, inode, birth time), not sealed. Never mode, size or owner,
// never a file another key or an earlier hour wrote, never another file on the same name. Rename
// and remove of files from another session stay refused. Each allowed change is audited.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshot, auditLines, gateIds, type Sandbox } from "./helpers/env.js";
import { KINDS } from "../src/audit/budget.js";
import { SftpClient, FX, PF, describe, type Attrs, type Reply } from "./helpers/sftp-client.js";
import { recordArrival, ARRIVALS_FILE } from "../src/vault/arrivals.js";
import { TIMES_WINDOW_MS, RecentArrivals } from "../src/vault/recent.js";

const TIMES = { atime: 1_600_000_000, mtime: 1_600_000_000 };

async function session(t: Test, sb: Sandbox): Promise<SftpClient> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  return c;
}

/** Upload `names` in one session of its own, which then ends (as one connection of rclone's pool). */
async function publish(t: Test, sb: Sandbox, ...names: string[]): Promise<void> {
  const a = await session(t, sb);
  for (const n of names) t.equal((await a.put(n, `bytes of ${n}\n`, PF.WRITE | PF.CREAT | PF.TRUNC)).status?.code, FX.OK, `${n} published`);
  await a.end();
}

const mtimeOf = (sb: Sandbox, n: string) => Math.floor(fs.statSync(path.join(sb.root, n)).mtimeMs / 1000);

function refused(t: Test, r: Reply, why: RegExp, what: string): void {
  t.equal(r.status?.code, FX.PERMISSION_DENIED, `${what}: ${describe(r)}`);
  t.match(r.status?.message, why, `${what}: says why`);
}

t.test("another session of the same key sets the times of a file it published: allowed, audited", async (t) => {
  const sb = sandbox(t);
  await publish(t, sb, "up.gpg");
  const content = fs.readFileSync(path.join(sb.root, "up.gpg"));
  const b = await session(t, sb);
  const r = await b.setstat("up.gpg", TIMES);
  t.equal(r.status?.code, FX.OK, describe(r));
  t.equal(mtimeOf(sb, "up.gpg"), TIMES.mtime, "mtime set");
  t.same(fs.readFileSync(path.join(sb.root, "up.gpg")), content, "the bytes unchanged");
  t.equal(fs.statSync(path.join(sb.root, "up.gpg")).mode & 0o7777, 0o640, "the mode unchanged");
  const line = auditLines(sb).find((l) => l.event === "times-set");
  t.match(line, { path: "up.gpg", mtime: TIMES.mtime, atime: TIMES.atime }, "audited with the times set");
  t.match(String(line?.published), /^\d{4}-\d\d-\d\dT/, "and when the file was published");
  // FSETSTAT on a read handle is the same question about the same file.
  const h = (await b.open("up.gpg", PF.READ)).handle!;
  t.equal((await b.fsetstat(h, { atime: 1_650_000_000, mtime: 1_650_000_000 })).status?.code, FX.OK, "FSETSTAT times on a read handle");
  await b.close(h);
  t.equal(mtimeOf(sb, "up.gpg"), 1_650_000_000);
  t.equal((await b.end()).code, 0);
});

t.test("everything else stays refused, and the file stays as it was", async (t) => {
  const sb = sandbox(t, { files: { "planted.gpg": "planted by root, no arrival\n" } });
  await publish(t, sb, "up.gpg", "sealed.gpg", "linked.gpg", "swapped.gpg", "old.gpg");
  const { uid, gid } = gateIds();
  const p = (n: string) => path.join(sb.root, n);
  // seal's work: root's, 0440.
  fs.chownSync(p("sealed.gpg"), 0, gid);
  fs.chmodSync(p("sealed.gpg"), 0o440);
  fs.linkSync(p("linked.gpg"), path.join(sb.state, "second-link"));
  // Another file under a published name (root restoring something there): not the file that arrived.
  fs.rmSync(p("swapped.gpg"));
  fs.writeFileSync(p("swapped.gpg"), "another file\n");
  fs.chownSync(p("swapped.gpg"), uid, gid);
  // A record of more than an hour ago (and nothing since) for old.gpg.
  const arrivals = path.join(sb.state, ARRIVALS_FILE);
  fs.writeFileSync(arrivals, fs.readFileSync(arrivals, "utf8").split("\n").filter((l) => !l.includes('"old.gpg"')).join("\n"));
  recordArrival(sb.state, "old.gpg", fs.statSync(p("old.gpg")), Date.now() - TIMES_WINDOW_MS - 60_000, "test");
  fs.chownSync(arrivals, uid, gid);
  const before = snapshot(sb.root);
  const beforeTimes = Object.fromEntries(fs.readdirSync(sb.root).map((n) => [n, fs.lstatSync(p(n)).mtimeMs]));

  const b = await session(t, sb);
  const cases: Array<[string, string, Attrs, RegExp]> = [
    ["mode", "up.gpg", { perm: 0o600 }, /existed before this session and cannot be changed$/],
    ["mode with the times", "up.gpg", { perm: 0o640, ...TIMES }, /cannot be changed$/],
    ["size (the same size)", "up.gpg", { size: fs.statSync(p("up.gpg")).size }, /cannot be changed$/],
    ["size 0", "up.gpg", { size: 0 }, /cannot be truncated/],
    ["owner", "up.gpg", { uid: 0, gid: 0, ...TIMES }, /owner .* cannot be changed/],
    ["times of a file with no arrival", "planted.gpg", TIMES, /its times neither, as this key did not publish it/],
    ["times of a sealed file", "sealed.gpg", TIMES, /its times neither, as it is sealed/],
    ["times of a file with a second link", "linked.gpg", TIMES, /its times neither, as it is not a regular file with a single link/],
    ["times of another file under a published name", "swapped.gpg", TIMES, /its times neither, as it is not the file that was published/],
    ["times of a file published more than an hour ago", "old.gpg", TIMES, /its times neither, as it was published more than an hour ago/],
    ["times of a directory", ".", TIMES, /cannot be changed$/],
  ];
  for (const [what, name, a, why] of cases) refused(t, await b.setstat(name, a), why, what);
  refused(t, await b.remove("up.gpg"), /cannot be removed/, "REMOVE of a file another session published");
  t.not((await b.rename("up.gpg", "moved.gpg")).status?.code, FX.OK, "RENAME of a file another session published");
  t.equal((await b.end()).code, 0);

  t.same(snapshot(sb.root), before, "every file byte-identical, nothing renamed or removed");
  for (const [n, m] of Object.entries(beforeTimes)) t.equal(fs.lstatSync(p(n)).mtimeMs, m, `${n}: times unchanged`);
  t.equal(auditLines(sb).filter((l) => l.event === "times-set").length, 0, "no times-set line");
});

t.test("another key's file, sharing the root and the state: refused", async (t) => {
  const sb = sandbox(t);
  sb.configure({ label: "other" });
  await publish(t, sb, "theirs.gpg");
  sb.configure({ label: "test" });
  const b = await session(t, sb);
  refused(t, await b.setstat("theirs.gpg", TIMES), /its times neither, as this key did not publish it/, "times of another key's file");
  await b.end();
  t.not(mtimeOf(sb, "theirs.gpg"), TIMES.mtime);
});

t.test("a long arrivals record (20,000 old lines): every file of the last hour is found, also one published after the first look", async (t) => {
  const sb = sandbox(t);
  const { uid, gid } = gateIds();
  // 20,000 old lines (about 1.5 MiB) before the session's own uploads.
  const old = Date.now() - 3 * TIMES_WINDOW_MS;
  const lines = Array.from({ length: 20_000 }, (_, i) => JSON.stringify({ t: old + i, p: `old/${i}.gpg`, i: `1:${i}`, k: "test" })).join("\n") + "\n";
  fs.writeFileSync(path.join(sb.state, ARRIVALS_FILE), lines);
  fs.chownSync(path.join(sb.state, ARRIVALS_FILE), uid, gid);
  const names = Array.from({ length: 40 }, (_, i) => `n${i}.gpg`);
  await publish(t, sb, ...names);
  const b = await session(t, sb);
  for (const n of names) t.equal((await b.setstat(n, TIMES)).status?.code, FX.OK, `${n}: times set`);
  // Published after the first SETSTAT read the record: found by reading what was appended since.
  await publish(t, sb, "late.gpg");
  t.equal((await b.setstat("late.gpg", TIMES)).status?.code, FX.OK, "late.gpg: times set");
  await b.end();
  t.equal(auditLines(sb).filter((l) => l.event === "times-set").length, names.length + 1, "one line per file");
});

t.test("RecentArrivals reads the record from where the last hour begins, then only what was appended", async (t) => {
  const sb = sandbox(t);
  const file = path.join(sb.state, ARRIVALS_FILE);
  const now = Date.now();
  const line = (p: string, at: number) => JSON.stringify({ t: at, p, i: "1:1", k: "test" }) + "\n";
  // A recent line at the very start (as after prune's compaction, which keeps a path's first
  // position): the tail read does not reach it, so its times stay refused (the safe side).
  const old = Array.from({ length: 5_000 }, (_, i) => line(`old/${i}`, now - 3 * TIMES_WINDOW_MS + i)).join("");
  fs.writeFileSync(file, line("early.gpg", now) + old + line("recent.gpg", now - 1000) + '{"torn":');
  const r = new RecentArrivals(sb.state);
  t.match(r.find("recent.gpg", now), { p: "recent.gpg", k: "test" }, "a line of the last hour is found");
  t.equal(r.find("old/10", now), undefined, "lines older than the window are not kept");
  t.equal(r.find("early.gpg", now), undefined, "lines before where the last hour begins are not read");
  fs.appendFileSync(file, "\n" + line("later.gpg", now));
  t.match(r.find("later.gpg", now), { p: "later.gpg" }, "an appended line is read on the next question");
  fs.writeFileSync(file, line("compacted.gpg", now));
  t.match(r.find("compacted.gpg", now), { p: "compacted.gpg" }, "a rewritten (compacted) record is read again from its start");
  t.equal(r.find("recent.gpg", now), undefined, "and what it no longer holds is forgotten");
});

t.test("a client looping on SETSTAT: lines up to the session's budget, then one notice, and session-end counts the rest", async (t) => {
  const sb = sandbox(t);
  await publish(t, sb, "loop.gpg");
  const b = await session(t, sb);
  const replies = await Promise.all(Array.from({ length: 1_005 }, (_, i) => b.setstat("loop.gpg", { atime: 1_600_000_000 + i, mtime: 1_600_000_000 + i })));
  t.ok(replies.every((r) => r.status?.code === FX.OK), "every change made");
  t.equal(mtimeOf(sb, "loop.gpg"), 1_600_001_004, "the last one stands");
  t.equal((await b.end()).code, 0);
  const all = auditLines(sb);
  const limit = KINDS.times.lines;
  t.equal(all.filter((l) => l.event === "times-set" && l.path === "loop.gpg").length, limit, `${limit} changes logged one by one`);
  t.match(all.filter((l) => l.event === "budget"), [{ kind: "times" }], "one line says where they stop");
  t.match(all.filter((l) => l.event === "session-end").at(-1), { notWritten: { times: 1_005 - limit } }, "session-end counts the rest");
});
