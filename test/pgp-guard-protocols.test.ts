// Acceptance 1 of the guardrail through the real clients: plaintext, a message encrypted only with
// a passphrase, one encrypted to another key, the attacks of issue 14 (item 4) and valid files (a
// message to SOURCE, detached signatures from gpg: ed25519 and RSA, binary and armored), sent with
// sftp, scp (SFTP mode and legacy -O) and rsync. Only the valid ones are stored; each refusal is
// audited; nothing else changes. And what duplicity writes (volumes, signatures, manifest) is stored.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { sandbox, snapshotAll, auditLines, run, FAKE_SSH, type Sandbox } from "./helpers/env.js";
import { gpgHome, guardAttacks, keyOf, duplicity, randomSource } from "./helpers/pgp.js";
import { FULL_ONLY } from "./helpers/scale.js";

type Send = (sb: Sandbox, local: string, name: string) => Promise<unknown>;
const client = (argv: string[], sb: Sandbox) => run(argv, { env: sb.sshEnv }, { timeoutMs: 120_000 });

const CLIENTS: Record<string, Send> = {
  sftp: (sb, local, name) => {
    const batch = path.join(path.dirname(local), `batch-${name}`);
    fs.writeFileSync(batch, `put ${local} ${name}\n`);
    return client(["sftp", "-S", FAKE_SSH, "-b", batch, "x:"], sb);
  },
  scp: (sb, local, name) => client(["scp", "-S", FAKE_SSH, local, `x:${name}`], sb),
  "scp -O": (sb, local, name) => client(["scp", "-O", "-S", FAKE_SSH, local, `x:${name}`], sb),
  rsync: (sb, local, name) => client(["/usr/bin/rsync", "-e", FAKE_SSH, local, `x:${name}`], sb),
};

t.test("only the valid uploads are stored, whatever the protocol", async (t) => {
  const g = gpgHome(t);
  const plain = Buffer.from("duplicity volume, unencrypted\n".repeat(500));
  const local = path.join(g.dir, "local");
  fs.mkdirSync(local, { mode: 0o755 });
  const rsa = keyOf(g, "RSA signer <rsa@example.invalid>", "rsa2048", null);
  // name -> bytes, and the refusal (null: stored).
  const files: Record<string, [Buffer, RegExp | null]> = {
    "plain.difftar": [plain, /refused: plaintext upload/],
    "sym.gpg": [g.gpg(["--passphrase", "pw", "-c"], plain), /refused: not encrypted to an expected recipient/],
    "stranger.gpg": [g.gpg(["-r", g.otherFpr, "-e"], plain), /refused: not encrypted to an expected recipient/],
    ...Object.fromEntries(Object.entries(guardAttacks(g, plain)).map(([n, [b, why]]) => [n, [b, new RegExp(`^refused: plaintext upload: .*${why.source}`)]])),
    "valid.gpg": [g.gpg(["-r", g.fpr, "-u", g.fpr, "-s", "-e"], plain), null],
    "valid.gpg.sig": [g.gpg(["-u", g.fpr, "--detach-sign"], plain), null],
    "valid.gpg.asc": [g.gpg(["-u", g.fpr, "--armor", "--detach-sign"], plain), null],
    "rsa.sig": [g.gpg(["-u", rsa, "--detach-sign"], plain), null],
    "rsa.asc": [g.gpg(["-u", rsa, "--armor", "--detach-sign"], plain), null],
  };
  const stored = Object.keys(files).filter((n) => files[n]![1] === null);
  for (const [n, [b]] of Object.entries(files)) fs.writeFileSync(path.join(local, n), b, { mode: 0o644 });
  for (const [proto, send] of Object.entries(CLIENTS)) {
    // scp in its SFTP mode talks to the same server as sftp: the quick scale (CI) leaves it to the full run.
    t.test(proto, proto === "scp" ? FULL_ONLY : {}, async (t) => {
      const sb = sandbox(t, { files: { "old.gpg": "old\n" }, config: { encryption: { required: true, recipients: [g.pub] } } });
      for (const [name, [bytes, refusal]] of Object.entries(files)) {
        const before = snapshotAll(sb);
        const r = (await send(sb, path.join(local, name), name)) as { code: number; stderr: string };
        if (refusal === null) {
          t.equal(r.code, 0, `${name}: ${r.stderr}`);
          t.same(fs.readFileSync(path.join(sb.root, name)), bytes, "stored byte for byte");
          continue;
        }
        t.not(r.code, 0, `${name} refused (${r.stderr.trim().split("\n").pop()})`);
        t.same(snapshotAll(sb), before, `${name}: nothing changed`);
        t.ok(
          auditLines(sb).some((l) => l.event === "upload-refused" && l.path === name && refusal.test(String(l.reason))),
          `${name}: the refusal is audited`,
        );
      }
      t.same(fs.readdirSync(sb.root).sort(), ["old.gpg", ...stored].sort());
    });
  }
});

t.test("what duplicity writes is stored", async (t) => {
  const g = gpgHome(t);
  const src = randomSource(g, 1_500_000);
  const target = path.join(g.dir, "target");
  duplicity(g, ["full", src, `file://${target}`]);
  // In the order duplicity sends them: the manifest, which finishes the set, last.
  const names = fs.readdirSync(target).sort((a, b) => Number(a.includes(".manifest")) - Number(b.includes(".manifest")) || a.localeCompare(b));
  t.ok(names.length >= 4, `two volumes, signatures and manifest: ${names.join(" ")}`);
  const sb = sandbox(t, { config: { encryption: { required: true, recipients: [g.pub] } } });
  for (const name of names) {
    const r = (await CLIENTS.sftp!(sb, path.join(target, name), name)) as { code: number; stderr: string };
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    t.same(fs.readFileSync(path.join(sb.root, name)), fs.readFileSync(path.join(target, name)), `${name}: stored byte for byte`);
  }
  t.notOk(auditLines(sb).some((l) => l.event === "upload-refused"), "nothing refused");
});
