// verify --stored (issue 14, item 3): files uploaded through the real gate (SFTP, scp, rsync) are
// judged against the hashes the audit log recorded, by the real binary as root. A changed byte, a
// removed file, a file root put there, a changed kept version: each named, exit 1. Renames, own
// removals, replacements, prune and a rotated log are followed without a false alarm.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { sandbox, auditLines, type Sandbox, type RunResult } from "./helpers/env.js";
import { SftpClient, FX } from "./helpers/sftp-client.js";
import { scpClient } from "./helpers/scp-wire.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";
import { fullSet, incSet, runRoot } from "./helpers/duplicity.js";
import { versionKey } from "../src/vault/versions.js";
import { open } from "../src/housekeeping/context.js";
import { verifyStored } from "../src/housekeeping/stored.js";

t.setTimeout(10 * 60_000);

const T0 = "20250101T000000Z";
const T1 = "20250102T000000Z";
const T2 = "20250103T000000Z";

async function sftp(sb: Sandbox, fn: (c: SftpClient) => Promise<void>): Promise<void> {
  const c = SftpClient.gate(sb);
  await c.init();
  await fn(c);
  await c.end();
}

async function put(t: Test, c: SftpClient, p: string, content: string): Promise<void> {
  t.equal((await c.put(p, content)).status?.code, FX.OK, `put ${p}`);
}

const verify = (sb: Sandbox): Promise<RunResult> => runRoot(sb, ["verify", "--stored"]);

/** The problem rows of the table: [KIND, path]. */
function rows(r: RunResult): string[][] {
  return r.stdout
    .toString()
    .split("\n")
    .filter((l) => /^ {2}(CHANGED|MISSING|UNRECORDED|UNREADABLE) /.test(l))
    .map((l) => l.trim().split(/ {2,}/).slice(0, 2));
}

function clean(t: Test, r: RunResult, what: string, judged?: number): void {
  t.equal(r.code, 0, `${what}: exit 0 (${r.stderr}${r.stdout.toString().slice(-600)})`);
  t.same(rows(r), [], `${what}: no problem row`);
  if (judged !== undefined) t.match(r.stdout.toString(), new RegExp(`verify --stored: ${judged} entries found and judged .* ${judged} match the audit log; 0 changed, 0 missing, 0 unrecorded, 0 unreadable: OK`), `${what}: ${judged} judged, all match`);
}

/** Uploads through all three protocols; returns the stored paths. */
async function uploads(t: Test, sb: Sandbox): Promise<string[]> {
  await sftp(sb, async (c) => {
    await put(t, c, "a.gpg", "A\n");
    t.equal((await c.mkdir("d")).status?.code, FX.OK);
    await put(t, c, "d/b.gpg", "B".repeat(5000));
    // A name with a control character: the log writes it as \x09, the disk has a tab.
    await put(t, c, "d/tab\there.gpg", "tab\n");
  });
  const src = localTree(t, { "one.gpg": "one\n", "r/x.gpg": "X\n", "r/s/y.gpg": "Y\n" });
  const s = await scpClient(sb, ["one.gpg", "host:d/"], src);
  t.equal(s.code, 0, `scp: ${s.stderr}`);
  const r = await rsyncClient(sb, ["-a", `${src}/r/`, "h:r/"]);
  t.equal(r.code, 0, `rsync: ${r.stderr}`);
  return ["a.gpg", "d/b.gpg", "d/tab\there.gpg", "d/one.gpg", "r/x.gpg", "r/s/y.gpg"];
}

t.test("every file through SFTP, scp and rsync matches; a changed byte, a removed file, a planted file are each named", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  const stored = await uploads(t, sb);
  clean(t, await verify(sb), "fresh uploads", stored.length);

  // One byte changed behind the gate's back (as bit rot or root would).
  const b = path.join(sb.root, "d/b.gpg");
  const bytes = fs.readFileSync(b);
  const flipped = Buffer.from(bytes);
  flipped[1234] = flipped[1234]! ^ 0x01;
  fs.writeFileSync(b, flipped);
  let r = await verify(sb);
  t.equal(r.code, 1, "a changed byte: exit 1");
  t.same(rows(r), [["CHANGED", "d/b.gpg"]], "named as changed, nothing else");
  t.match(r.stdout.toString(), /1 changed, 0 missing, 0 unrecorded, 0 unreadable: 1 problem\(s\)/);
  t.match(r.stderr, /verify --stored: test: 1 problem\(s\)/, "and a line on stderr, for cron's mail");
  fs.writeFileSync(b, bytes);
  clean(t, await verify(sb), "byte restored");

  // The file with a tab in its name, removed: reported in the log's form.
  const tab = path.join(sb.root, "d/tab\there.gpg");
  fs.renameSync(tab, path.join(sb.dir, "kept"));
  r = await verify(sb);
  t.equal(r.code, 1, "a removed file: exit 1");
  t.same(rows(r), [["MISSING", "d/tab\\x09here.gpg"]], "named as missing, its tab made visible");
  fs.renameSync(path.join(sb.dir, "kept"), tab);

  // A file root put there directly (not through the gate), with a newline in its name.
  const planted = path.join(sb.root, "r/s/planted\n.gpg");
  fs.writeFileSync(planted, "not through the gate");
  r = await verify(sb);
  t.equal(r.code, 1, "a planted file: exit 1");
  t.same(rows(r), [["UNRECORDED", "r/s/planted\\x0a.gpg"]], "named as unrecorded, its newline made visible");
  t.notMatch(r.stdout.toString(), /planted\n/, "no raw newline of a name reaches the output");
  fs.rmSync(planted);

  // A symbolic link in place of a stored file: never followed, reported as changed.
  fs.renameSync(path.join(sb.root, "a.gpg"), path.join(sb.dir, "a.gpg"));
  fs.symlinkSync(path.join(sb.dir, "a.gpg"), path.join(sb.root, "a.gpg"));
  r = await verify(sb);
  t.equal(r.code, 1);
  t.same(rows(r), [["CHANGED", "a.gpg"]], "a link where a file was: changed");
  t.match(r.stdout.toString(), /a\.gpg +recorded [0-9a-f]{16}…, now a symbolic link/);
  fs.rmSync(path.join(sb.root, "a.gpg"));
  fs.renameSync(path.join(sb.dir, "a.gpg"), path.join(sb.root, "a.gpg"));
  clean(t, await verify(sb), "all restored", stored.length);

  // Each run leaves one audit line that monitoring can read.
  const lines = auditLines(sb).filter((l) => l.event === "verify-stored");
  t.equal(lines.length, 7, "one verify-stored line per run");
  t.match(lines[1], { ok: false, anomaly: true, found: stored.length, matched: stored.length - 1, changed: 1, missing: 0, unrecorded: 0, unreadable: 0, client: "root" });
  t.match(lines.at(-1), { ok: true, found: stored.length, matched: stored.length, changed: 0, missing: 0, unrecorded: 0, unreadable: 0 });
  t.notOk("anomaly" in lines.at(-1)!, "a clean run is no anomaly");
});

t.test("own renames and removals over SFTP, rsync single-file and tree pushes: followed, no false alarm", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, async (c) => {
    // pexpect+sftp: a temporary name, then renamed; restic: its own lock removed.
    await put(t, c, ".vol1.part", "volume one\n");
    t.equal((await c.rename(".vol1.part", "vol1.gpg")).status?.code, FX.OK, "own rename");
    await put(t, c, "lock", "lock\n");
    t.equal((await c.remove("lock")).status?.code, FX.OK, "own removal");
    // A chain of renames, ending where an earlier file was removed.
    await put(t, c, "x1", "x\n");
    t.equal((await c.rename("x1", "x2")).status?.code, FX.OK);
    t.equal((await c.rename("x2", "lock")).status?.code, FX.OK);
  });
  const src = localTree(t, { "single.gpg": "single\n", "tree/a.gpg": "a\n", "tree/b/c.gpg": "c\n" });
  t.equal((await rsyncClient(sb, [path.join(src, "single.gpg"), "h:single.gpg"])).code, 0, "single-file push");
  t.equal((await rsyncClient(sb, ["-a", `${src}/tree`, "h:./"])).code, 0, "tree push");
  const lines = auditLines(sb);
  t.ok(lines.some((l) => l.event === "rename") && lines.some((l) => l.event === "remove-own") && lines.some((l) => l.via === "rsync"), "the log holds renames, a removal and rsync publishes");
  clean(t, await verify(sb), "after renames, removals and rsync", 5);
  t.same(fs.readdirSync(sb.root).sort(), ["lock", "single.gpg", "tree", "vol1.gpg"]);
});

t.test("replaced volumes: kept versions are judged too, a changed one is named; prune's removals are followed", async (t) => {
  // The smallest retention floor, and prune's clock 36 hours on: past the floor, short of the
  // warning for a key with no arrivals (48 hours).
  const sb = sandbox(t, { config: { housekeeping: { retentionDays: 1 } } });
  const older = [...fullSet(T0), ...incSet(T0, T1)];
  const unfinished = fullSet(T2, { vols: 3, manifest: false });
  const vol3 = unfinished[2]!;
  await sftp(sb, async (c) => {
    t.equal((await c.mkdir("host")).status?.code, FX.OK);
    for (const n of [...older, ...unfinished]) await put(t, c, `host/${n}`, `bytes of ${n}\n`);
  });
  // A resume: the last volume sent twice more (paramiko's overwrite, then pexpect's rename onto it).
  await sftp(sb, async (c) => {
    await put(t, c, `host/${vol3}`, "second try\n");
    await put(t, c, `host/.${vol3}.part`, "third try\n");
    t.equal((await c.rename(`host/.${vol3}.part`, `host/${vol3}`)).status?.code, FX.OK, "rename onto the volume");
  });
  const vdir = path.join(sb.state, "versions", versionKey(`host/${vol3}`));
  t.same(fs.readdirSync(vdir).sort(), ["1", "2", "path"]);
  const all = older.length + unfinished.length;
  let r = await verify(sb);
  clean(t, r, "after two replacements", all + 2);
  t.match(r.stdout.toString(), /\(2 kept versions\)/);

  // The first version (the original bytes) changed in state/versions.
  const v1 = path.join(vdir, "1");
  const orig = fs.readFileSync(v1);
  fs.writeFileSync(v1, "tampered\n");
  r = await verify(sb);
  t.equal(r.code, 1, "a changed version: exit 1");
  t.same(rows(r), [["CHANGED", `host/${vol3} [version 1]`]]);
  fs.writeFileSync(v1, orig);
  fs.rmSync(path.join(vdir, "2"));
  r = await verify(sb);
  t.same(rows(r), [["MISSING", `host/${vol3} [version 2]`]], "a removed version: missing");
  fs.writeFileSync(path.join(vdir, "2"), "second try\n");
  // A forged 'path' file cannot move versions onto another name.
  fs.writeFileSync(path.join(vdir, "path"), `host/${older[0]}\n`);
  r = await verify(sb);
  t.equal(r.code, 1);
  t.match(rows(r), [["CHANGED", new RegExp(`^state:versions/${versionKey(`host/${vol3}`)}/path$`)]]);
  fs.writeFileSync(path.join(vdir, "path"), `host/${vol3}\n`);
  // A file straight in versions/ (no version directory): found, and named as unrecorded.
  const stray = path.join(vdir, "..", "stray");
  fs.writeFileSync(stray, "not a version\n");
  r = await verify(sb);
  t.equal(r.code, 1, "a stray file in versions/: exit 1");
  t.same(rows(r), [["UNRECORDED", "state:versions/stray"]], "a stray file in versions/: unrecorded");
  fs.rmSync(stray);
  clean(t, await verify(sb), "versions restored");

  // A second full chain, finished; prune --keep-full 1 removes the first whole chain.
  const T3 = "20250104T000000Z";
  const newer = fullSet(T3);
  // The unfinished set T2 is finished first (its manifest), so that the chain T0 may go.
  await sftp(sb, async (c) => {
    await put(t, c, `host/duplicity-full.${T2}.manifest.gpg`, "manifest\n");
    for (const n of newer) await put(t, c, `host/${n}`, `bytes of ${n}\n`);
  });
  const p = await runRoot(sb, ["prune", "--keep-full", "1", "--now", new Date(Date.now() + 36 * 3_600_000).toISOString()]);
  t.equal(p.code, 0, p.stderr + p.stdout);
  t.match(p.stdout, new RegExp(`removed host/duplicity-full\\.${T0}…`));
  t.notOk(fs.existsSync(path.join(sb.root, "host", older[0]!)), "the oldest chain is gone");
  clean(t, await verify(sb), "after prune");
});

t.test("a rotated log (F.1) is read before F; without it, older files are unrecorded", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, (c) => put(t, c, "before.gpg", "before\n"));
  // README's rotation: mv F F.1, then a new empty F the account can append to.
  fs.renameSync(sb.audit, `${sb.audit}.1`);
  fs.writeFileSync(sb.audit, "");
  fs.chownSync(sb.audit, fs.statSync(`${sb.audit}.1`).uid, fs.statSync(`${sb.audit}.1`).gid);
  await sftp(sb, (c) => put(t, c, "after.gpg", "after\n"));
  const r = await verify(sb);
  clean(t, r, "both logs read", 2);
  t.match(r.stdout.toString(), new RegExp(`audit logs: ${sb.audit}\\.1, ${sb.audit}\n`), "oldest first");
  fs.rmSync(`${sb.audit}.1`);
  const lost = await verify(sb);
  t.equal(lost.code, 1);
  t.same(rows(lost), [["UNRECORDED", "before.gpg"]], "the history that was thrown away cannot vouch for its files");
});

t.test("the log also named F.1 (an audit --rotate killed between its link and its unlink): read once", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, (c) => put(t, c, "before.gpg", "before\n"));
  fs.renameSync(sb.audit, `${sb.audit}.2`); // the earlier rotated log had moved up
  fs.writeFileSync(sb.audit, "");
  fs.chownSync(sb.audit, fs.statSync(`${sb.audit}.2`).uid, fs.statSync(`${sb.audit}.2`).gid);
  await sftp(sb, (c) => put(t, c, "after.gpg", "after\n"));
  fs.linkSync(sb.audit, `${sb.audit}.1`); // the log's move to .1, its unlink never ran
  const r = await verify(sb);
  clean(t, r, "each file judged once", 2);
  t.match(r.stdout.toString(), new RegExp(`audit logs: ${sb.audit}\\.2, ${sb.audit}\n`), "the log read once, under its own name");
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const kind = (p: string) => {
  const st = fs.lstatSync(p);
  return st.isSymbolicLink() ? `link -> ${fs.readlinkSync(p)}` : st.isFIFO() ? "fifo" : `file ${st.ino}`;
};

t.test("a rotated log that is a symbolic link (to the rotated log, or dangling) or a FIFO: never followed nor read; an UNREADABLE row names it, exit 1", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, (c) => put(t, c, "before.gpg", "before\n"));
  // README's rotation, but the rotated log kept elsewhere, and F.1 something else.
  const kept = path.join(sb.dir, "kept.log");
  fs.renameSync(sb.audit, kept);
  fs.writeFileSync(sb.audit, "");
  fs.chownSync(sb.audit, fs.statSync(kept).uid, fs.statSync(kept).gid);
  await sftp(sb, (c) => put(t, c, "after.gpg", "after\n"));
  const one = `${sb.audit}.1`;
  const plants: [string, () => void][] = [
    ["a symbolic link to the rotated log", () => fs.symlinkSync(kept, one)],
    ["a dangling symbolic link", () => fs.symlinkSync(path.join(sb.dir, "nothing-here"), one)],
    ["a FIFO", () => spawnSync("/usr/bin/mkfifo", ["-m", "0600", one])],
  ];
  for (const [what, plant] of plants) {
    plant();
    const before = { kept: fs.readFileSync(kept), log: fs.readFileSync(sb.audit, "utf8"), one: kind(one) };
    const r = await verify(sb);
    const said = r.stdout.toString();
    t.equal(r.code, 1, `${what}: exit 1 (${JSON.stringify(r.stderr + said.slice(-600))})`);
    t.match(said, new RegExp(`^ {2}UNREADABLE +${esc(one)} +an audit log that is ${what === "a FIFO" ? "not a regular file" : "a symbolic link"}`, "m"), `${what}: the row names it, and why`);
    t.match(r.stderr, new RegExp(`not read: ${esc(one)} \\(`), `${what}: and the line cron mails`);
    t.ok(rows(r).some(([k, p]) => k === "UNRECORDED" && p === "before.gpg"), `${what}: what only that log recorded is not vouched for`);
    t.same({ kept: fs.readFileSync(kept), one: kind(one) }, { kept: before.kept, one: before.one }, `${what}: the rotated log and what stands at F.1 are untouched`);
    const log = fs.readFileSync(sb.audit, "utf8");
    t.ok(log.startsWith(before.log), `${what}: the log only grew`);
    const added = log.slice(before.log.length).split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    t.match(added, [{ event: "verify-stored", ok: false, anomaly: true }], `${what}: by its own line, not ok`);
    fs.rmSync(one);
  }
  fs.renameSync(kept, one);
  clean(t, await verify(sb), "the rotated log itself at F.1", 2);
});

t.test("F rotated while the check runs and F.1 a symbolic link to it: the late lines are not read through it; an UNREADABLE row names it", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, async (c) => {
    t.equal((await c.mkdir("sub")).status?.code, FX.OK);
    await put(t, c, "sub/a.gpg", "A\n");
  });
  const kept = path.join(sb.dir, "kept.log");
  const one = `${sb.audit}.1`;
  // After the log was read, before the walk enters sub/: F moved away, a new F, and F.1 a link to the old one.
  const h = open(sb.config, "verify-stored", (_comps, name) => {
    if (name !== "sub") return;
    fs.renameSync(sb.audit, kept);
    fs.writeFileSync(sb.audit, "");
    fs.symlinkSync(kept, one);
  });
  const keptBytes = () => (fs.existsSync(kept) ? fs.readFileSync(kept) : null);
  let r;
  try {
    r = await verifyStored(h);
  } finally {
    h.close();
  }
  t.equal(r.counts.unreadable, 1, "one problem: F.1");
  t.match(r.rows, [{ kind: "unreadable", path: one, detail: /^an audit log that is a symbolic link/ }]);
  t.equal(r.found, r.judged);
  t.ok(fs.lstatSync(one).isSymbolicLink() && fs.readlinkSync(one) === kept, "the link is left as it was");
  t.ok(keptBytes()?.length, "and the log it leads to is there, untouched by the check");
});

t.test("usage, config and read-only keys: exit 2, nothing judged", async (t) => {
  const sb = sandbox(t);
  let r = await runRoot(sb, ["verify", "--stored", "--bogus"]);
  t.equal(r.code, 2, "an unknown option");
  r = await runRoot({ ...sb, config: path.join(sb.dir, "nope.json") }, ["verify", "--stored"]);
  t.equal(r.code, 2, "a config that is not there");
  t.match(r.stderr, /nope\.json/);
  sb.configure({ access: "read-only" });
  r = await verify(sb);
  t.equal(r.code, 2, "a read-only key");
  t.match(r.stderr, /a read-only key gets no verify-stored: it publishes nothing through the gate/);
});

t.test("a session that publishes or removes while the check runs: judged next time, not reported now", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, async (c) => {
    await put(t, c, "a.gpg", "A\n");
    t.equal((await c.mkdir("sub")).status?.code, FX.OK);
    await put(t, c, "sub/b.gpg", "B\n");
  });
  const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex");
  const log = (event: string, fields: Record<string, unknown>) => fs.appendFileSync(sb.audit, JSON.stringify({ label: "test", client: "x", event, ...fields }) + "\n");
  // Just before the walk enters sub/ (after the log was read): a new file appears there, its line
  // a moment later as from a session, and sub/b.gpg is removed by its own session.
  const h = open(sb.config, "verify-stored", (_comps, name) => {
    if (name !== "sub") return;
    fs.writeFileSync(path.join(sb.root, "sub/new.gpg"), "new\n");
    fs.rmSync(path.join(sb.root, "sub/b.gpg"));
    log("publish", { path: "sub/new.gpg", size: 4, sha256: sha("new\n") });
    log("remove-own", { path: "sub/b.gpg" });
  });
  let r;
  try {
    r = await verifyStored(h);
  } finally {
    h.close();
  }
  t.same(r.counts, { changed: 0, missing: 0, unrecorded: 0, unreadable: 0 }, "no problem");
  t.equal(r.late, 2, "sub/new.gpg (unrecorded when found) and sub/b.gpg (missing): judged on the next run");
  t.equal(r.found, r.judged);
  clean(t, await verify(sb), "the next run", 2);
});

t.test("names the log cannot tell apart, and names that are not UTF-8: reported, never guessed", async (t) => {
  const sb = sandbox(t, { config: { profile: "plain" } });
  await sftp(sb, (c) => put(t, c, "tab\there.gpg", "tab\n"));
  clean(t, await verify(sb), "the upload alone", 1);
  // The log writes the tab as \x09: a file named with those four characters reads the same.
  fs.writeFileSync(path.join(sb.root, "tab\\x09here.gpg"), "look-alike\n");
  // A name that is not UTF-8 (the gate refuses or skips such names).
  fs.writeFileSync(Buffer.from("/" + path.relative("/", sb.root) + "/bad-\xff.gpg", "latin1"), "x");
  const r = await verify(sb);
  t.equal(r.code, 1);
  const got = rows(r);
  t.ok(got.some(([k, p]) => k === "UNRECORDED" && p === "bad-\\xff.gpg"), "the non-UTF-8 name, shown with its byte escaped");
  // The first of the two the walk meets is judged against the recorded hash; the second is reported.
  t.ok(got.filter(([, p]) => p === "tab\\x09here.gpg").length >= 1, "the look-alike is reported");
  t.match(r.stdout.toString(), /tab\\x09here\.gpg +its name reads the same in the audit log as another file's/);
  t.match(r.stdout.toString(), /verify --stored: 3 entries found and judged/);
});
