// `verify` on real duplicity backups (gpg encrypt + sign with a throwaway key, to a file:// target):
// clean sets verify; a flipped byte, a deleted volume, a volume signed by another key, a forged
// manifest, an extra volume, a plaintext file and a broken chain are each reported, non-zero.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import t from "tap";
import * as openpgp from "openpgp";
import { BIN, run } from "./helpers/env.js";
import { gpgHome, duplicity, type Gpg } from "./helpers/pgp.js";
import { FULL_ONLY } from "./helpers/scale.js";
import { verifyDir, statusOf, type Row } from "../src/pgp/verify.js";

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
    t.match(r.rows.get(vol2)!.notes.join(";"), /decrypted, signed by .*SHA1 matches the manifest/);
    const remote = await verify(target, { signer: g.pub, recipients: [g.pub] });
    t.equal(remote.problems, 0, "on REMOTE: encrypted to the right key");
    t.match(remote.text, /signature not checked \(no --secret-key\)/);
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
    t.equal(statusOf(r.rows.get(vol2)!), "HASH MISMATCH", r.text);
    t.match(r.rows.get(vol2)!.problems.map((p) => p.detail).join(";"), /but the manifest says/);
    t.ok(r.rows.get(vol2)!.problems.some((p) => p.status === "BAD SIGNATURE"), "and it no longer decrypts cleanly");
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
  });

  t.test("a volume signed by another key", async (t) => {
    const d = copy();
    const f = path.join(d, vol2);
    const plain = g.gpg(["--decrypt", f]);
    fs.writeFileSync(f, g.gpg(["-r", g.fpr, "-u", g.otherFpr, "--sign", "--encrypt"], plain));
    const r = await verify(d, full);
    const details = r.rows.get(vol2)!.problems.map((p) => `${p.status}: ${p.detail}`).join("; ");
    t.match(details, /BAD SIGNATURE: signed by another key/, r.text);
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
    t.match(r.rows.get(manifest)!.problems[0]!.detail, /signed by another key/);
    t.equal(statusOf(r.rows.get(vol2)!), "BAD SIGNATURE", "the forged volume: unsigned");
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
    t.match(r.rows.get("b.gpg.asc")!.problems[0]!.detail, /signed by another key/);
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
