// The duplicity profile and the replace policy in the vault, through the real gate (SFTP at the
// packet level, as paramiko and pexpect+sftp use it, and rsync's single-file push).
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshot, auditLines, run, BIN, type Sandbox, type Teardownable } from "./helpers/env.js";
import { SftpClient, FX, PF, describe } from "./helpers/sftp-client.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";
import { fullSet, incSet, plant, runRoot, exists } from "./helpers/duplicity.js";
import { versionKey, MAX_VERSIONS } from "../src/vault/versions.js";
import { ARRIVALS_FILE } from "../src/vault/arrivals.js";

const T0 = "20250101T000000Z";
const T1 = "20250102T000000Z";
const T2 = "20250103T000000Z";
const T9 = "20250109T000000Z";
const HOUR = 3_600_000;

/** host/: a finished full T0 and incremental T0->T1; an unfinished full T2 with 3 volumes and its signatures. */
function history(sb: Sandbox): { unfinished: string[] } {
  plant(sb, "host", [...fullSet(T0), ...incSet(T0, T1)], Date.now() - 2 * HOUR);
  const unfinished = fullSet(T2, { vols: 3, manifest: false });
  plant(sb, "host", unfinished, Date.now() - HOUR);
  return { unfinished };
}

/** An SFTP session that ends with its test even when an assertion throws (not at the 15-minute idle timeout). */
async function session(t: Teardownable, sb: Sandbox): Promise<SftpClient> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  return c;
}

function read(sb: Sandbox, rel: string): string {
  return fs.readFileSync(path.join(sb.root, rel), "utf8");
}

t.test("name attacks are refused at upload, with nothing stored", async (t) => {
  const sb = sandbox(t);
  history(sb);
  const before = snapshot(sb.root);
  const c = await session(t, sb);
  const attacks: [string, RegExp][] = [
    ["duplicity-full.20991231T000000Z.vol1.difftar.gpg", /in the future/],
    ["duplicity-full.20991231T000000Z.manifest.gpg", /in the future/],
    [`duplicity-inc.${T0}.to.${T9}.manifest.gpg`, /where another incremental set already starts/],
    [`duplicity-new-signatures.${T0}.to.${T9}.sigtar.gpg`, /another incremental/],
    [`duplicity-full.${T0}.manifest`, /repeats .*manifest\.gpg' .*another suffix/],
    [`duplicity-full.${T0}.vol1.difftar.gz`, /another suffix/],
    [`duplicity-full.${T0}.vol7.difftar.gpg`, /adds to a finished backup set/],
    [`duplicity-inc.${T2}.to.${T9}.vol1.difftar.gpg`, /where no finished backup set ends/],
    ["df.kx2f3a.m", /not a name duplicity 0\.8 writes/],
    [`duplicity-full.${T0}.manifest.gpg.bak`, /looks like a duplicity file/],
  ];
  for (const [name, re] of attacks) {
    const r = await c.open(`host/${name}`, PF.WRITE | PF.CREAT | PF.TRUNC);
    t.not(r.status?.code ?? FX.OK, FX.OK, `${name}: ${describe(r)}`);
    t.match(r.status?.message ?? "", re, name);
    if (r.handle) await c.close(r.handle);
  }
  // pexpect+sftp: a temporary name, then a rename onto the attack.
  t.equal((await c.put("host/.fake.part", "fake")).status?.code, FX.OK);
  const mv = await c.rename("host/.fake.part", "host/duplicity-full.20991231T000000Z.manifest.gpg");
  t.match(mv.status?.message ?? "", /in the future/);
  t.equal((await c.remove("host/.fake.part")).status?.code, FX.OK, "the session may remove its own temporary");
  await c.end();
  t.same(snapshot(sb.root), before, "nothing stored");
  const denied = auditLines(sb).filter((l) => l.decision === "deny" || l.event === "refused" || /refus|deny/.test(l.event));
  t.ok(denied.length >= attacks.length + 1, `each refusal is audited (${denied.length} lines)`);
  for (const [name] of attacks.slice(0, 3)) t.ok(denied.some((l) => JSON.stringify(l).includes(name)), `audit names ${name}`);
});

t.test("rsync: a refused name is not stored by a single-file push", async (t) => {
  const sb = sandbox(t);
  history(sb);
  const before = snapshot(sb.root);
  const local = localTree(t, { "duplicity-full.20991231T000000Z.manifest.gpg": "fake" });
  const r = await rsyncClient(sb, [path.join(local, "duplicity-full.20991231T000000Z.manifest.gpg"), "h:host/duplicity-full.20991231T000000Z.manifest.gpg"]);
  t.not(r.code, 0);
  t.match(r.stderr, /in the future/);
  t.same(snapshot(sb.root), before);
});

t.test("replace: resume may send the last volume and the signatures of an unfinished set again", async (t) => {
  const sb = sandbox(t);
  const { unfinished } = history(sb);
  const [, , vol3, sig] = unfinished as [string, string, string, string];
  const c = await session(t, sb);
  // paramiko: OPEN WRITE|CREAT|TRUNC straight onto the final name.
  t.equal((await c.put(`host/${vol3}`, "vol3, second try")).status?.code, FX.OK);
  t.equal(read(sb, `host/${vol3}`), "vol3, second try");
  t.equal((await c.put(`host/${sig}`, "signatures, second try")).status?.code, FX.OK);
  // pexpect+sftp: a temporary name renamed onto the final one.
  t.equal((await c.put(`host/.${vol3}.part`, "vol3, third try")).status?.code, FX.OK);
  t.equal((await c.rename(`host/.${vol3}.part`, `host/${vol3}`)).status?.code, FX.OK);
  t.equal(read(sb, `host/${vol3}`), "vol3, third try");
  t.notOk(exists(path.join(sb.root, "host", `.${vol3}.part`)));
  // What it replaced is immutable again: no removal, no rename, no attribute change.
  t.not((await c.remove(`host/${vol3}`)).status?.code, FX.OK, "a replacement cannot then be removed");
  t.not((await c.rename(`host/${vol3}`, "host/elsewhere")).status?.code, FX.OK);
  t.equal(read(sb, `host/${vol3}`), "vol3, third try");

  const refused: [string, RegExp][] = [
    [unfinished[1]!, /only the last volume of an unfinished set, vol3/],
    [fullSet(T0)[1]!, /its backup set is finished/],
    [incSet(T0, T1)[0]!, /finished/],
  ];
  for (const [name, re] of refused) {
    const old = read(sb, `host/${name}`);
    const r = await c.open(`host/${name}`, PF.WRITE | PF.CREAT | PF.TRUNC);
    t.match(r.status?.message ?? "", re, name);
    t.match(r.status?.message ?? "", /already exists and cannot be overwritten/);
    t.equal(read(sb, `host/${name}`), old);
  }
  await c.end();

  const vdir = path.join(sb.state, "versions", versionKey(`host/${vol3}`));
  t.equal(fs.readFileSync(path.join(vdir, "1"), "utf8"), `bytes of ${vol3}\n`, "the original bytes are kept");
  t.equal(fs.readFileSync(path.join(vdir, "2"), "utf8"), "vol3, second try");
  t.equal(fs.readFileSync(path.join(vdir, "path"), "utf8"), `host/${vol3}\n`);
  t.equal(fs.readFileSync(path.join(sb.state, "versions", versionKey(`host/${sig}`), "1"), "utf8"), `bytes of ${sig}\n`);
  const replaced = auditLines(sb).filter((l) => l.event === "replace");
  t.equal(replaced.length, 3);
  t.ok(replaced.every((l) => l.anomaly === true && l.level === "warn"));
  t.match(replaced[0], { path: `host/${vol3}`, version: 1 });

  // A fourth replacement of the same name: refused, the three versions stay.
  const c2 = await session(t, sb);
  t.equal((await c2.put(`host/${vol3}`, "vol3, fourth try")).status?.code, FX.OK, "third version");
  const r = await c2.open(`host/${vol3}`, PF.WRITE | PF.CREAT | PF.TRUNC);
  const fifth = r.handle ? await c2.write(r.handle, 0, "fifth").then(() => c2.close(r.handle!)) : r;
  t.not(fifth.status?.code, FX.OK);
  t.match(fifth.status?.message ?? "", /already replaced 3 times/);
  t.equal(read(sb, `host/${vol3}`), "vol3, fourth try");
  await c2.end();
  t.same(fs.readdirSync(vdir).sort(), ["1", "2", "3", "path"]);
});

t.test("replace: the same bytes again, or a rename onto itself, uses no version slot (issue 16, item 5)", async (t) => {
  const sb = sandbox(t);
  const { unfinished } = history(sb);
  const [, , vol3, sig] = unfinished as [string, string, string, string];
  const vol4 = vol3.replace(".vol3.", ".vol4.");
  const ino = (rel: string) => fs.lstatSync(path.join(sb.root, rel)).ino;
  const stored = ino(`host/${sig}`);
  const c = await session(t, sb);
  // More resends than there are slots, each way a client can make one.
  for (let i = 0; i <= MAX_VERSIONS; i++) {
    t.equal((await c.put(`host/${sig}`, `bytes of ${sig}\n`)).status?.code, FX.OK, `resend ${i + 1} of the stored bytes`);
    t.equal((await c.put(`host/.${sig}.part`, `bytes of ${sig}\n`)).status?.code, FX.OK);
    t.equal((await c.rename(`host/.${sig}.part`, `host/${sig}`)).status?.code, FX.OK, `resend ${i + 1} by a rename`);
  }
  t.notOk(exists(path.join(sb.root, "host", `.${sig}.part`)), "the renamed temporary is gone");
  t.equal(ino(`host/${sig}`), stored, "the stored file was never replaced");
  t.equal((await c.put(`host/${vol4}`, "vol4")).status?.code, FX.OK, "a new last volume");
  for (let i = 0; i <= MAX_VERSIONS; i++) t.equal((await c.rename(`host/${vol4}`, `host/${vol4}`)).status?.code, FX.OK, `rename onto itself ${i + 1}`);
  t.equal(read(sb, `host/${vol4}`), "vol4");
  t.notOk(exists(path.join(sb.state, "versions")), "no version kept for any of these");
  // All slots are still there for a genuine resume.
  for (let i = 1; i <= MAX_VERSIONS; i++) t.equal((await c.put(`host/${sig}`, `signatures, try ${i}`)).status?.code, FX.OK, `genuine replacement ${i}`);
  t.equal((await c.put(`host/${vol4}`, "vol4, second try")).status?.code, FX.OK, "genuine replacement of the last volume");
  await c.end();
  const vdir = path.join(sb.state, "versions", versionKey(`host/${sig}`));
  t.same(
    ["1", "2", "3"].map((n) => fs.readFileSync(path.join(vdir, n), "utf8")),
    [`bytes of ${sig}\n`, "signatures, try 1", "signatures, try 2"],
  );
  const lines = auditLines(sb);
  const replaced = lines.filter((l) => l.event === "replace");
  t.same(
    replaced.map((l) => [l.path, l.version, l.anomaly]),
    [1, 2, 3].map((n) => [`host/${sig}`, n, true]).concat([[`host/${vol4}`, 1, true]]),
    "each genuine replacement, and only those, is an anomaly",
  );
  t.equal(lines.filter((l) => l.event === "resend-same").length, MAX_VERSIONS + 1, "resends are logged as such");
  // The audit review lists every replacement among its anomalies.
  const review = await run([BIN, "audit", "--file", sb.audit], { env: { PATH: "/usr/bin:/bin" } });
  t.equal(review.code, 0, review.stderr);
  const flagged = review.stdout.toString().split("\n").filter((l) => /flagged\s+replace/.test(l));
  t.equal(flagged.length, 4, `audit lists the replacements:\n${flagged.join("\n")}`);
});

t.test("replace: 'never' refuses every overwrite; the plain profile has nothing to resume", async (t) => {
  for (const config of [{ replace: "never" }, { profile: "plain" }]) {
    const sb = sandbox(t, { config });
    const { unfinished } = history(sb);
    const before = snapshot(sb.root);
    const c = await session(t, sb);
    const r = await c.open(`host/${unfinished[2]}`, PF.WRITE | PF.CREAT | PF.TRUNC);
    t.equal(r.status?.message, `append-only: 'host/${unfinished[2]}' already exists and cannot be overwritten`, JSON.stringify(config));
    // pexpect+sftp's way, a rename onto the name: refused too.
    t.equal((await c.put("host/.again.part", "again")).status?.code, FX.OK);
    t.not((await c.rename("host/.again.part", `host/${unfinished[2]}`)).status?.code, FX.OK, `${JSON.stringify(config)}: no rename onto it`);
    t.equal((await c.remove("host/.again.part")).status?.code, FX.OK);
    await c.end();
    t.same(snapshot(sb.root), before);
  }
});

t.test("replace: one session at a time per backup set", async (t) => {
  const sb = sandbox(t);
  const { unfinished } = history(sb);
  const a = await session(t, sb);
  const h = await a.openHandle(`host/${unfinished[2]}`, PF.WRITE | PF.CREAT | PF.TRUNC);
  const b = await session(t, sb);
  const r = await b.open(`host/${unfinished[3]}`, PF.WRITE | PF.CREAT | PF.TRUNC);
  t.match(r.status?.message ?? "", /another session is writing the same backup set/);
  const other = await b.open(`host/duplicity-full.${T9}.vol1.difftar.gpg`, PF.WRITE | PF.CREAT | PF.TRUNC);
  t.ok(other.handle, "another set is free");
  await b.close(other.handle!);
  await b.end();
  await a.write(h, 0, "A's bytes");
  t.equal((await a.close(h)).status?.code, FX.OK);
  await a.end();
  const b2 = await session(t, sb);
  t.equal((await b2.put(`host/${unfinished[3]}`, "B's bytes")).status?.code, FX.OK, "free once A has ended");
  await b2.end();
});

t.test("every publish records its arrival", async (t) => {
  const sb = sandbox(t);
  const c = await session(t, sb);
  await c.put("a.txt", "a");
  await c.put(`duplicity-full.${T0}.vol1.difftar.gpg`, "v");
  await c.end();
  const lines = fs
    .readFileSync(path.join(sb.state, ARRIVALS_FILE), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { t: number; p: string; i: string });
  t.same(
    lines.map((l) => l.p),
    ["a.txt", `duplicity-full.${T0}.vol1.difftar.gpg`],
  );
  const st = fs.statSync(path.join(sb.root, "a.txt"));
  t.equal(lines[0]!.i, `${st.dev}:${st.ino}`);
  t.ok(Math.abs(lines[0]!.t - Date.now()) < 10 * 60_000);
});

t.test('pull: "metadata" reads manifests and signatures only (and volume 1 of an unfinished set)', async (t) => {
  const sb = sandbox(t, { config: { pull: "metadata" } });
  const { unfinished } = history(sb);
  const c = await session(t, sb);
  for (const name of [fullSet(T0)[3]!, fullSet(T0)[2]!, incSet(T0, T1)[1]!, incSet(T0, T1)[2]!, unfinished[0]!])
    t.equal((await c.get(`host/${name}`)).toString(), `bytes of ${name}\n`, `${name} readable`);
  for (const name of [fullSet(T0)[0]!, incSet(T0, T1)[0]!, unfinished[1]!]) {
    const r = await c.open(`host/${name}`, PF.READ);
    t.notOk(r.handle, `${name} not readable`);
    t.match(r.status?.message ?? "", /cannot be read with this key \(pull: metadata\)/);
  }
  const list = await c.opendir("host");
  t.ok(list.handle, "listing is not reading");
  await c.end();
});

t.test("after seal, SFTP still reads and lists sealed files and cannot change them", async (t) => {
  const sb = sandbox(t, { config: { housekeeping: { minAgeMinutes: 0 } } });
  history(sb);
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  const sealedName = `host/${fullSet(T0)[0]}`;
  t.equal(fs.statSync(path.join(sb.root, sealedName)).uid, 0);
  const before = snapshot(sb.root);
  const c = await session(t, sb);
  t.equal((await c.get(sealedName)).toString(), `bytes of ${fullSet(T0)[0]}\n`);
  const d = await c.opendir("host");
  t.ok(d.handle);
  const names = await c.readdir(d.handle!);
  t.ok(names.names?.some((n) => n.name === fullSet(T0)[0]), "listed");
  await c.close(d.handle!);
  for (const [what, p] of [
    ["overwrite", c.open(sealedName, PF.WRITE | PF.CREAT | PF.TRUNC)],
    ["append", c.open(sealedName, PF.WRITE | PF.APPEND)],
    ["remove", c.remove(sealedName)],
    ["rename", c.rename(sealedName, "host/x")],
    ["chmod", c.setstat(sealedName, { perm: 0o666 })],
  ] as [string, Promise<{ status?: { code: number }; handle?: Buffer }>][]) {
    const reply = await p;
    t.not(reply.status?.code ?? FX.OK, FX.OK, what);
    t.notOk(reply.handle, what);
  }
  t.equal((await c.put("host/new.txt", "new")).status?.code, FX.OK, "new files can still be added to a sealed directory");
  await c.end();
  const after = snapshot(sb.root);
  delete after["host/new.txt"];
  t.same(
    Object.fromEntries(Object.entries(after).filter(([k]) => k !== "." && k !== "host")),
    Object.fromEntries(Object.entries(before).filter(([k]) => k !== "." && k !== "host")),
    "every sealed file unchanged",
  );
});
