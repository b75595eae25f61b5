// `verify` on real duplicity backups (gpg encrypt + sign with a throwaway key, to a file:// target):
// clean sets verify; a flipped byte, a deleted volume, a volume signed by another key, a forged
// manifest, an extra volume, a plaintext file and a broken chain are each reported, non-zero; so
// are truncation, extension, and a volume, manifest or signature file of another set put in place.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";
import t from "tap";
import * as openpgp from "openpgp";
import { BIN, TOP, run } from "./helpers/env.js";
import { gpgHome, duplicity, duplicityCommand, randomSource, type Gpg } from "./helpers/pgp.js";
import { FULL_ONLY } from "./helpers/scale.js";
import { verifyDir, statusOf, type Row } from "../src/pgp/verify.js";

const problemsOf = (r: Row | undefined) => (r ? r.problems.map((p) => `${p.status}: ${p.detail}`).join("; ") : "(no row)");

/** A full set of 3 volumes and one incremental, made once; each case works on a copy. */
function backup(g: Gpg): string {
  const src = path.join(g.dir, "src");
  fs.mkdirSync(src);
  // Just over two volumes of 1 MiB: a third, short one (each verify pass decrypts every byte).
  fs.writeFileSync(path.join(src, "random.bin"), crypto.randomBytes(2_200_000));
  fs.writeFileSync(path.join(src, "notes.txt"), "first\n");
  const target = path.join(g.dir, "target");
  duplicity(g, ["full", src, `file://${target}`]);
  fs.writeFileSync(path.join(src, "notes.txt"), "second\n");
  // duplicity names sets by the second: the incremental must not share the full set's time.
  spawnSync("sleep", ["1.1"]);
  duplicity(g, ["incremental", src, `file://${target}`]);
  return target;
}

interface Result {
  rows: Map<string, Row>;
  problems: number;
  text: string;
}

async function verify(dir: string, opts: { signer: string; secretKey?: string; passphraseFile?: string; recipients?: string[] }): Promise<Result> {
  const out: string[] = [];
  const { rows, problems } = await verifyDir({ dir, signers: [opts.signer], recipients: opts.recipients ?? [], secretKey: opts.secretKey, passphraseFile: opts.passphraseFile }, (s) => out.push(s));
  return { rows: new Map(rows.map((r) => [r.file, r])), problems, text: out.join("\n") };
}

const find = (dir: string, re: RegExp) => fs.readdirSync(dir).filter((n) => re.test(n)).sort();

t.test("duplicity backups", async (t) => {
  const g = gpgHome(t);
  const target = backup(g);
  const names = fs.readdirSync(target).sort();
  const vols = find(target, /^duplicity-full\..*\.vol\d+\.difftar\.gpg$/);
  const manifest = find(target, /^duplicity-full\..*\.manifest\.gpg$/)[0]!;
  t.ok(vols.length >= 3, `${vols.length} volumes`);
  t.ok(find(target, /^duplicity-inc\./).length >= 2, "an incremental set");
  let n = 0;
  const copy = () => {
    const d = path.join(g.dir, `case${++n}`);
    fs.cpSync(target, d, { recursive: true });
    return d;
  };
  const full = { signer: g.pub, secretKey: g.sec };
  const vol2 = vols.find((v) => v.includes(".vol2."))!;

  t.test("a clean backup verifies, with and without the secret key", async (t) => {
    const r = await verify(target, full);
    t.equal(r.problems, 0, r.text);
    t.equal(r.rows.size, names.length);
    t.match(r.text, /verify: OK$/);
    t.match(r.rows.get(vol2)!.notes.join(";"), /decrypted by gpg, integrity-protected, signed by .*SHA1 matches the manifest/);
    t.match(r.text, new RegExp(`${names.length} file\\(s\\) found, ${names.length} judged`));
    // Without the secret key nothing inside a file is judged: never an OK.
    const remote = await verify(target, { signer: g.pub, recipients: [g.pub] });
    t.equal(remote.problems, names.length, "without the secret key every file stays unverified");
    t.ok([...remote.rows.values()].every((r) => statusOf(r) === "UNVERIFIED"), "and none is NOT ENCRYPTED: the recipients are right");
    t.match(remote.text, /contents and signature not checked \(no --secret-key\)/);
    t.match(remote.text, /\nverify: NOT verified: \d+ file\(s\) can only be judged with --secret-key/);
    t.notMatch(remote.text, /verify: OK/);
    const wrong = await verify(target, { signer: g.pub, recipients: [g.otherPub] });
    t.equal(wrong.problems, names.length, "every file: not to the expected recipient");
    t.equal(statusOf(wrong.rows.get(vol2)!), "NOT ENCRYPTED");
  });

  // Each case decrypts the whole backup again (~15 s on CI's two cores): the quick scale keeps the
  // acceptance cases (clean, flipped byte, deleted volume, other signer, forged manifest, the command).
  t.test("a secret key behind a passphrase", FULL_ONLY, async (t) => {
    const privateKey = await openpgp.readPrivateKey({ armoredKey: fs.readFileSync(g.sec, "utf8") });
    const locked = await openpgp.encryptKey({ privateKey, passphrase: "correct horse" });
    const keyFile = path.join(g.dir, "locked.asc");
    fs.writeFileSync(keyFile, locked.armor());
    fs.writeFileSync(path.join(g.dir, "pass"), "correct horse\n");
    const r = await verify(target, { signer: g.pub, secretKey: keyFile, passphraseFile: path.join(g.dir, "pass") });
    t.equal(r.problems, 0, r.text);
  });

  t.test("one flipped byte in a volume", async (t) => {
    const d = copy();
    const f = path.join(d, vol2);
    const bytes = fs.readFileSync(f);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    fs.writeFileSync(f, bytes);
    const r = await verify(d, full);
    t.equal(statusOf(r.rows.get(vol2)!), "DAMAGED", r.text);
    t.match(problemsOf(r.rows.get(vol2)), /HASH MISMATCH: SHA1 \w+, but the manifest says/);
    t.ok(r.rows.get(vol2)!.problems.some((p) => p.status === "DAMAGED"), "and gpg finds it damaged");
    t.equal(r.problems, 1);
  });

  t.test("a deleted volume", async (t) => {
    const d = copy();
    fs.rmSync(path.join(d, vol2));
    const r = await verify(d, full);
    t.equal(statusOf(r.rows.get(vol2)!), "MISSING", r.text);
    t.match(r.rows.get(vol2)!.problems[0]!.detail, /listed in the manifest/);
    const remote = await verify(d, { signer: g.pub });
    t.equal(statusOf(remote.rows.get(vol2)!), "MISSING", "without the key too: the numbers have a gap");
    t.ok(remote.problems > 0);
  });

  t.test("a volume signed by another key", async (t) => {
    const d = copy();
    const f = path.join(d, vol2);
    const plain = g.gpg(["--decrypt", f]);
    fs.writeFileSync(f, g.gpg(["-r", g.fpr, "-u", g.otherFpr, "--sign", "--encrypt"], plain));
    const r = await verify(d, full);
    const details = problemsOf(r.rows.get(vol2));
    t.match(details, /BAD SIGNATURE: signed by key \w+, which is not a --signer key/, r.text);
    t.match(details, /HASH MISMATCH/);
  });

  t.test("a forged manifest that matches a forged volume", async (t) => {
    const d = copy();
    const f = path.join(d, vol2);
    const plain = g.gpg(["--decrypt", f]);
    plain[100]! ^= 0xff;
    fs.writeFileSync(f, g.gpg(["-r", g.fpr, "--encrypt"], plain)); // the thief cannot sign as SOURCE
    const sha1 = crypto.createHash("sha1").update(fs.readFileSync(f)).digest("hex");
    const text = g.gpg(["--decrypt", path.join(d, manifest)]).toString().replace(/(Volume 2:[\s\S]*?Hash SHA1 )[0-9a-f]+/, `$1${sha1}`);
    fs.writeFileSync(path.join(d, manifest), g.gpg(["-r", g.fpr, "-u", g.otherFpr, "--sign", "--encrypt"], text));
    const r = await verify(d, full);
    t.equal(statusOf(r.rows.get(manifest)!), "BAD SIGNATURE", r.text);
    t.match(problemsOf(r.rows.get(manifest)), /not a --signer key/);
    t.match(problemsOf(r.rows.get(vol2)), /BAD SIGNATURE: not signed/, "the forged volume: unsigned");
    t.match(problemsOf(r.rows.get(vol2)), /UNVERIFIED: not compared with a manifest: its manifest failed/, "and no manifest vouches for it");
  });

  t.test("truncated by 1 and by 100 bytes, extended by 1 byte", async (t) => {
    const sig = find(target, /^duplicity-full-signatures\..*\.sigtar\.gpg$/)[0]!;
    // The volume has a hash in the manifest; the manifest and the signature file only gpg's verdict.
    for (const file of [vol2, manifest, sig]) {
      for (const [how, change] of [
        ["truncated by 1 byte", (b: Buffer) => b.subarray(0, b.length - 1)],
        ["truncated by 100 bytes", (b: Buffer) => b.subarray(0, b.length - 100)],
        ["extended by 1 byte", (b: Buffer) => Buffer.concat([b, Buffer.from([0x0a])])],
      ] as const) {
        const d = copy();
        fs.writeFileSync(path.join(d, file), change(fs.readFileSync(path.join(d, file))));
        const r = await verify(d, full);
        t.ok(r.problems > 0, `${file} ${how}: non-zero`);
        t.match(problemsOf(r.rows.get(file)), /DAMAGED/, `${file} ${how}: named, damaged (${problemsOf(r.rows.get(file)).slice(0, 160)})`);
      }
    }
  });

  t.test("a volume, a manifest and a signature file of another set under this set's names", async (t) => {
    // Each is genuine: signed by SOURCE, it decrypts. Only its place is wrong.
    const inc = (re: RegExp) => find(target, re)[0]!;
    const incVol = inc(/^duplicity-inc\..*\.vol1\.difftar\.gpg$/);
    const incManifest = inc(/^duplicity-inc\..*\.manifest\.gpg$/);
    const incSig = inc(/^duplicity-new-signatures\..*\.sigtar\.gpg$/);
    const fullSig = find(target, /^duplicity-full-signatures\..*\.sigtar\.gpg$/)[0]!;
    const vol1 = vols.find((v) => v.includes(".vol1."))!;
    for (const [from, to] of [
      [incVol, vol1],
      [incManifest, manifest],
      [incSig, fullSig],
    ]) {
      const d = copy();
      fs.copyFileSync(path.join(d, from!), path.join(d, to!));
      const r = await verify(d, full);
      t.ok(r.problems > 0, `${to} replaced by ${from}: non-zero`);
      t.match(problemsOf(r.rows.get(to!)), /MISPLACED: signed at .*outside its set's run/, `${to}: named (${problemsOf(r.rows.get(to!)).slice(0, 200)})`);
    }
  });

  t.test("what is not a backup is not OK", async (t) => {
    // One signature packet (tag 2, new format, 2-octet length) around 4 KB of plaintext.
    const body = Buffer.concat([Buffer.from([0x04, 0x00]), crypto.randomBytes(4094)]);
    const len = body.length - 192;
    const packet = Buffer.concat([Buffer.from([0xc2, 192 + (len >> 8), len & 0xff]), body]);
    const d = copy();
    fs.writeFileSync(path.join(d, "notes"), packet);
    fs.writeFileSync(path.join(d, "data"), "x\n");
    fs.writeFileSync(path.join(d, "data.sig"), packet);
    // A set whose manifest is such a packet around junk: it cannot be restored.
    fs.writeFileSync(path.join(d, manifest), packet);
    const r = await verify(d, full);
    t.not(statusOf(r.rows.get("notes")!), "OK", problemsOf(r.rows.get("notes")));
    t.not(statusOf(r.rows.get("data.sig")!), "OK", problemsOf(r.rows.get("data.sig")));
    t.not(statusOf(r.rows.get(manifest)!), "OK", problemsOf(r.rows.get(manifest)));
    for (const v of vols) t.match(problemsOf(r.rows.get(v)), /UNVERIFIED: not compared with a manifest/, `${v}: its set failed`);
    t.notMatch(r.text, /verify: OK/);
    const [, matched, all] = /duplicity: \d+ set\(s\); (\d+) of (\d+) volume/.exec(r.text) ?? [];
    t.equal(Number(all) - Number(matched), vols.length, "the summary counts the full set's volumes as not matched");
  });

  t.test("an extra volume, a plaintext file, a missing full set", FULL_ONLY, async (t) => {
    const d = copy();
    const vol9 = vol2.replace(".vol2.", ".vol9.");
    fs.copyFileSync(path.join(d, vol2), path.join(d, vol9));
    fs.writeFileSync(path.join(d, "notes.txt"), "plaintext\n");
    let r = await verify(d, full);
    t.equal(statusOf(r.rows.get(vol9)!), "EXTRA", r.text);
    t.equal(statusOf(r.rows.get("notes.txt")!), "NOT ENCRYPTED");
    for (const v of find(d, /^duplicity-full(-signatures)?\./)) fs.rmSync(path.join(d, v));
    r = await verify(d, full);
    const inc = find(d, /^duplicity-inc\..*\.manifest\.gpg$/)[0]!;
    t.match(r.rows.get(inc)!.problems.map((p) => p.detail).join(";"), /the chain this incremental continues is missing/);
  });

  t.test("detached signatures", async (t) => {
    const d = path.join(g.dir, "detached");
    fs.mkdirSync(d);
    const data = g.gpg(["-r", g.fpr, "--encrypt"], crypto.randomBytes(100_000));
    fs.writeFileSync(path.join(d, "a.gpg"), data);
    fs.writeFileSync(path.join(d, "a.gpg.sig"), g.gpg(["-u", g.fpr, "--detach-sign"], data));
    fs.writeFileSync(path.join(d, "b.gpg"), data);
    fs.writeFileSync(path.join(d, "b.gpg.asc"), g.gpg(["-u", g.otherFpr, "--armor", "--detach-sign"], data));
    const r = await verify(d, { signer: g.pub });
    t.equal(statusOf(r.rows.get("a.gpg.sig")!), "OK", r.text);
    t.equal(statusOf(r.rows.get("b.gpg.asc")!), "BAD SIGNATURE");
    t.match(problemsOf(r.rows.get("b.gpg.asc")), /not a --signer key/);
    // Swapped: a.gpg's signature now stands beside c.gpg, whose bytes differ.
    fs.writeFileSync(path.join(d, "c.gpg"), g.gpg(["-r", g.fpr, "--encrypt"], crypto.randomBytes(1000)));
    fs.copyFileSync(path.join(d, "a.gpg.sig"), path.join(d, "c.gpg.sig"));
    const swapped = await verify(d, { signer: g.pub });
    t.match(problemsOf(swapped.rows.get("c.gpg.sig")), /BAD SIGNATURE: .*BADSIG/, swapped.text);
  });

  t.test("the command: table, summary, exit status", async (t) => {
    // A small signed and encrypted file: decrypting the whole backup again in a new process would
    // only repeat what the cases above checked in this one.
    const small = path.join(g.dir, "small");
    fs.mkdirSync(small);
    fs.writeFileSync(path.join(small, "x.gpg"), g.gpg(["-r", g.fpr, "-u", g.fpr, "--sign", "--encrypt"], crypto.randomBytes(10_000)));
    const ok = await run([BIN, "verify", small, "--signer", g.pub, "--secret-key", g.sec], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 240_000 });
    t.equal(ok.code, 0, ok.stderr);
    t.match(ok.stdout.toString(), /^STATUS +FILE +DETAIL\n/);
    t.match(ok.stdout.toString(), /\nverify: OK\n$/);
    const d = copy();
    fs.rmSync(path.join(d, vol2));
    const bad = await run([BIN, "verify", d, "--signer", g.pub], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 240_000 });
    t.equal(bad.code, 1);
    t.match(bad.stdout.toString(), /\nMISSING +duplicity-full\.\S+\.vol2\.difftar\.gpg/);
    const usage = await run([BIN, "verify", target, "--sign", g.pub], { env: { PATH: "/usr/bin:/bin" } });
    t.equal(usage.code, 2);
    t.match(usage.stderr, /unknown option '--sign'/);
  });
});

t.test("a resumed duplicity backup verifies clean", async (t) => {
  // duplicity restarts a killed full set one volume back and lists that volume twice in the manifest.
  const g = gpgHome(t);
  const src = randomSource(g, 5_500_000);
  const target = path.join(g.dir, "target");
  const { argv, env } = duplicityCommand(g, ["full", src, `file://${target}`]);
  const child = spawn("duplicity", argv, { env, detached: true, stdio: "ignore" });
  const exited = new Promise((r) => child.on("exit", r));
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && !(fs.existsSync(target) && fs.readdirSync(target).some((n) => /\.vol3\./.test(n)))) await new Promise((r) => setTimeout(r, 10));
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  t.notOk(fs.readdirSync(target).some((n) => n.includes(".manifest")), "killed before its manifest");
  const again = spawnSync("duplicity", argv, { env, encoding: "utf8" });
  t.equal(again.status, 0, again.stderr);
  const manifest = find(target, /\.manifest\.gpg$/)[0]!;
  const listed = [...g.gpg(["--decrypt", path.join(target, manifest)]).toString().matchAll(/^Volume (\d+):/gm)].map((m) => m[1]);
  const twice = listed.filter((n, i) => listed.indexOf(n) !== i);
  t.equal(twice.length, 1, `one volume listed twice (volumes listed: ${listed.join(" ")})`);
  const r = await verify(target, { signer: g.pub, secretKey: g.sec });
  t.equal(r.problems, 0, r.text);
  t.match(r.text, /listed again by a resumed backup: judged by the last entry/);
});

t.test("the command's own guard: a run that stops before every file is judged fails", async (t) => {
  const g = gpgHome(t);
  const d = path.join(g.dir, "d");
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, "x.gpg"), g.gpg(["-r", g.fpr, "-u", g.fpr, "--sign", "--encrypt"], "x"));
  // gpg's run replaced by a promise that never settles: the event loop empties with verify unfinished.
  const script = `
    const { Gpg } = await import(${JSON.stringify(path.join(TOP, "dist/src/pgp/gpg.js"))});
    Gpg.prototype.run = () => new Promise(() => {});
    const { verifyMain } = await import(${JSON.stringify(path.join(TOP, "dist/src/pgp/verify.js"))});
    verifyMain(${JSON.stringify([d, "--signer", g.pub, "--secret-key", g.sec])}).then((c) => (process.exitCode = c));`;
  const tmp = path.join(g.dir, "tmp");
  fs.mkdirSync(tmp);
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { PATH: "/usr/bin:/bin", TMPDIR: tmp }, timeout: 60_000 });
  t.equal(r.status, 3, r.stderr);
  t.match(r.stderr, /the run stopped before every file was judged \(at x\.gpg\): NOT verified/);
  t.equal(r.stdout, "", "no table, no OK");
  // The private GnuPG home (and its agent) goes with the run, also when the run never finished.
  t.same(fs.readdirSync(tmp), [], "no GnuPG home left behind");
});
