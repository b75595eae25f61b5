// The packet reader on what gpg and OpenPGP.js really write (v3 and v6 session-key packets,
// armored and binary), on hand-made edge cases, and the guard's verdict table.
import t from "tap";
import * as openpgp from "openpgp";
import { gpgHome, guardAttacks, keyOf, packet } from "./helpers/pgp.js";
import crypto from "node:crypto";
import { classify, describe, readHeader, HEAD_BYTES, MAX_SIGNATURE_BYTES, TAIL_BYTES, type Shape } from "../src/pgp/packets.js";
import { judge, loadRecipients, PLAINTEXT, WRONG_RECIPIENT } from "../src/pgp/guard.js";
import { EncryptionSchema } from "../src/config/schema.js";

const shape = (b: Buffer | Uint8Array) => {
  const file = Buffer.from(b);
  return classify(file.subarray(0, HEAD_BYTES), file.length, (pos, n) => file.subarray(pos, pos + n));
};

t.test("what gpg writes", async (t) => {
  const g = gpgHome(t);
  const plain = Buffer.from("hello world\n".repeat(100));
  const samples: Record<string, [Buffer, Shape["kind"], RegExp?]> = {
    plaintext: [plain, "other", /not an OpenPGP message/],
    gzip: [Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]), "other"],
    empty: [Buffer.alloc(0), "other", /empty/],
    "signed only": [g.gpg(["-u", g.fpr, "--sign"], plain), "other", /compressed data/],
    "signed only, uncompressed": [g.gpg(["-u", g.fpr, "-z", "0", "--sign"], plain), "other", /one-pass signature/],
    clearsigned: [g.gpg(["-u", g.fpr, "--clearsign"], plain), "other", /SIGNED MESSAGE/],
    "public key": [g.gpg(["--export", g.fpr]), "other", /public key/],
    "armored key": [g.gpg(["--armor", "--export", g.fpr]), "other", /PUBLIC KEY BLOCK/],
    "symmetric only": [g.gpg(["--passphrase", "pw", "-c"], plain), "encrypted"],
    "to source": [g.gpg(["-r", g.fpr, "-e"], plain), "encrypted"],
    "to source, armored": [g.gpg(["-r", g.fpr, "-e", "--armor"], plain), "encrypted"],
    "to source and stranger, signed": [g.gpg(["-r", g.otherFpr, "-r", g.fpr, "-u", g.fpr, "-s", "-e"], plain), "encrypted"],
    "hidden recipient": [g.gpg(["-r", g.fpr, "--throw-keyids", "-e"], plain), "encrypted"],
    "detached signature": [g.gpg(["-u", g.fpr, "--detach-sign"], plain), "signature"],
    "armored detached signature": [g.gpg(["-u", g.fpr, "--armor", "--detach-sign"], plain), "signature"],
  };
  for (const [name, [bytes, kind, why]] of Object.entries(samples)) {
    const s = shape(bytes);
    t.equal(s.kind, kind, name);
    if (why && s.kind === "other") t.match(s.why, why, `${name}: ${s.why}`);
  }
  const want = await loadRecipients([g.pub]);
  const enc = EncryptionSchema.parse({ required: true, recipients: [g.pub] });
  const verdict = (name: string, anonymous = false) => judge(shape(samples[name]![0]), enc, want, anonymous);
  t.equal(verdict("plaintext"), PLAINTEXT);
  t.equal(verdict("signed only"), PLAINTEXT);
  t.equal(verdict("symmetric only"), WRONG_RECIPIENT);
  t.equal(verdict("to source"), null);
  t.equal(verdict("to source, armored"), null);
  t.equal(verdict("to source and stranger, signed"), null);
  t.equal(verdict("detached signature"), null);
  t.equal(verdict("hidden recipient"), WRONG_RECIPIENT, "--throw-keyids is refused by default");
  t.equal(verdict("hidden recipient", true), null, "...and accepted with anonymousRecipients");
  const strangerOnly = await loadRecipients([g.otherPub]);
  t.equal(judge(shape(samples["to source"]![0]), enc, strangerOnly), WRONG_RECIPIENT, "to another key");
  const noRecipients = EncryptionSchema.parse({ required: true });
  t.equal(judge(shape(samples["symmetric only"]![0]), noRecipients, undefined), null, "without recipients, a passphrase is enough");
  t.equal(judge(shape(plain), EncryptionSchema.parse({}), undefined), null, "not required: anything goes");
  const s = shape(samples["to source and stranger, signed"]![0]);
  t.equal(s.kind === "encrypted" && s.recipients.length, 2);
});

t.test("what OpenPGP.js writes: v4 and v6 keys, SEIPDv2", async (t) => {
  for (const v6Keys of [false, true]) {
    const { publicKey } = await openpgp.generateKey({ type: "curve25519", userIDs: [{ name: "x" }], format: "object", config: { v6Keys } });
    const message = await openpgp.createMessage({ binary: new Uint8Array(5000) });
    const bin = await openpgp.encrypt({ message, encryptionKeys: publicKey, format: "binary", config: { aeadProtect: v6Keys } });
    const s = shape(Buffer.from(bin));
    t.equal(s.kind, "encrypted", `v6Keys=${v6Keys}`);
    if (s.kind !== "encrypted") continue;
    const sub = publicKey.getKeys()[1]!;
    t.equal(s.recipients[0]!.keyId, sub.getKeyID().toHex(), "the key id of the encryption subkey");
    const armored = await openpgp.encrypt({ message, encryptionKeys: publicKey, config: { v6Keys } });
    t.equal(shape(Buffer.from(armored)).kind, "encrypted", "armored");
    const hidden = await openpgp.encrypt({ message, encryptionKeys: publicKey, wildcard: true, format: "binary" });
    const h = shape(Buffer.from(hidden));
    t.ok(h.kind === "encrypted" && h.recipients[0]!.anonymous, "wildcard recipient is anonymous");
  }
});

t.test("hand-made edge cases", async (t) => {
  const pkesk = Buffer.concat([Buffer.from([0xc1, 10, 3]), Buffer.from("0123456789abcdef", "hex"), Buffer.from([1])]);
  const seipd = Buffer.from([0xd2, 0xe0, 1]); // partial length: streamed
  t.equal(shape(Buffer.concat([pkesk, seipd])).kind, "encrypted", "new-format headers");
  const oldPkesk = Buffer.concat([Buffer.from([0x84, 10]), pkesk.subarray(2)]);
  t.equal(shape(Buffer.concat([oldPkesk, seipd])).kind, "encrypted", "an old-format header (tag 18 has none: tags above 15 do not fit)");
  const marker = Buffer.from([0xca, 3, 0x50, 0x47, 0x50]);
  t.equal(shape(Buffer.concat([marker, pkesk, seipd])).kind, "encrypted", "a marker packet is skipped");
  t.match(shape(seipd), { kind: "other", why: /without any session key/ });
  t.match(shape(pkesk), { kind: "other", why: /ends before any encrypted data/ });
  t.match(shape(pkesk.subarray(0, 5)), { kind: "other", why: /ends inside/ });
  const literal = Buffer.from([0xcb, 5, 0x62, 0, 0, 0, 0]);
  t.match(shape(Buffer.concat([pkesk, literal])), { kind: "other", why: /literal data/ });
  // Session keys that fill the whole head: nothing decisive, refused.
  const many = Buffer.concat(Array.from({ length: HEAD_BYTES / pkesk.length + 1 }, () => pkesk));
  t.match(classify(many.subarray(0, HEAD_BYTES), many.length + 1000), { kind: "other", why: /nothing decisive/ });
  // Version 6 session-key packets name the key by fingerprint (RFC 9580 5.1.1).
  const fpr4 = Buffer.from("00112233445566778899aabbccddeeff01234567", "hex");
  const v6 = Buffer.concat([Buffer.from([0xc1, 24, 6, 21, 4]), fpr4, Buffer.from([25])]);
  t.match(shape(Buffer.concat([v6, seipd])), { kind: "encrypted", recipients: [{ keyId: "ccddeeff01234567", fingerprint: fpr4.toString("hex"), anonymous: false }] });
  const fpr6 = Buffer.alloc(32, 0xab);
  const v6k = Buffer.concat([Buffer.from([0xc1, 36, 6, 33, 6]), fpr6, Buffer.from([25])]);
  t.match(shape(Buffer.concat([v6k, seipd])), { kind: "encrypted", recipients: [{ keyId: "abababababababab", fingerprint: fpr6.toString("hex") }] });
  t.match(shape(Buffer.concat([Buffer.from([0xc1, 3, 6, 0, 25]), seipd])), { kind: "encrypted", recipients: [{ keyId: null, anonymous: true }] }, "v6 anonymous");
  t.same(readHeader(Buffer.from([0xc2, 0xff, 0, 1, 0, 0]), 0), { tag: 2, size: 6, length: 65536 }, "five-octet length");
  t.equal(readHeader(Buffer.from([0xc2, 0xff, 0]), 0), null, "cut header");
  const armor = (body: Buffer, kind = "MESSAGE") => Buffer.from(`\n-----BEGIN PGP ${kind}-----\nComment: x\n\n${body.toString("base64")}\n=AAAA\n-----END PGP ${kind}-----\n`);
  t.equal(shape(armor(Buffer.concat([pkesk, seipd]))).kind, "encrypted", "armored, with a header line");
  t.match(shape(armor(literal)), { kind: "other", armored: true, why: /literal data/ });
  t.match(shape(Buffer.from("-----BEGIN PGP MESSAGE-----\n\n!!!!\n")), { kind: "other", why: /not base64/ });
  t.match(shape(Buffer.from("text first\n-----BEGIN PGP MESSAGE-----\n")), { kind: "other" });
});

t.test("config: recipients need required, unknown keys are refused", async (t) => {
  t.throws(() => EncryptionSchema.parse({ recipients: ["/x.asc"] }));
  t.throws(() => EncryptionSchema.parse({ required: true, recipient: ["/x.asc"] }));
  t.throws(() => EncryptionSchema.parse({ required: true, recipients: ["relative.asc"] }));
  t.match(EncryptionSchema.parse({}), { required: false, recipients: [], anonymousRecipients: false });
  await t.rejects(loadRecipients(["/nonexistent/cert.asc"]), { code: "BAD_REQUEST", message: /cert\.asc is not a usable OpenPGP certificate \(ENOENT\)/ });
});

t.test("issue 14: the attacks that passed, and what real signers write still passes", async (t) => {
  const g = gpgHome(t);
  const plain = Buffer.from("hello world\n".repeat(100));
  for (const [name, [bytes, why]] of Object.entries(guardAttacks(g, plain))) t.match(shape(bytes), { kind: "other", why }, name);
  const rsa = keyOf(g, "RSA signer <rsa@example.invalid>", "rsa2048", null);
  const signatures: Record<string, Buffer> = {
    ed25519: g.gpg(["-u", g.fpr, "--detach-sign"], plain),
    "ed25519, armored": g.gpg(["-u", g.fpr, "--armor", "--detach-sign"], plain),
    "ed25519, text mode (type 0x01)": g.gpg(["-u", g.fpr, "--textmode", "--detach-sign"], plain),
    rsa: g.gpg(["-u", rsa, "--detach-sign"], plain),
    "rsa, armored": g.gpg(["-u", rsa, "--armor", "--detach-sign"], plain),
    "two signers": g.gpg(["-u", g.fpr, "-u", rsa, "--detach-sign"], plain),
  };
  for (const v6Keys of [false, true]) {
    const { privateKey } = await openpgp.generateKey({ type: "curve25519", userIDs: [{ name: "x" }], format: "object", config: { v6Keys } });
    const message = await openpgp.createMessage({ binary: plain });
    const sig = await openpgp.sign({ message, signingKeys: privateKey, detached: true, format: "binary" });
    signatures[`OpenPGP.js v${v6Keys ? 6 : 4}`] = Buffer.from(sig as Uint8Array);
  }
  for (const [name, bytes] of Object.entries(signatures)) t.match(shape(bytes), { kind: "signature" }, `${name}: ${describe(shape(bytes))}`);
  t.match(shape(signatures["two signers"]!), { count: 2 });
  t.equal(signatures["OpenPGP.js v6"]![2], 6, "the v6 sample is a v6 signature");
});

t.test("detached signatures: the packet must parse", async (t) => {
  const g = gpgHome(t);
  const good = g.gpg(["-u", g.fpr, "--detach-sign"], "x");
  const h = readHeader(good, 0) as { size: number; length: number };
  const body = good.subarray(h.size);
  t.equal(h.size + h.length, good.length, "one packet");
  const sig = (b: Buffer) => shape(packet(2, b));
  const edit = (at: number, byte: number) => Buffer.from(body.map((v, i) => (i === at ? byte : v)));
  t.match(sig(body), { kind: "signature" }, "as gpg wrote it, with a five-octet length");
  t.match(sig(edit(0, 3)), { kind: "other", why: /version 3; only v4 and v6/ }, "v3");
  t.match(sig(edit(1, 0x13)), { kind: "other", why: /signature type 0x13/ }, "a certification, not a document signature");
  t.match(sig(edit(2, 99)), { kind: "other", why: /public-key algorithm 99/ });
  const hashed = body.readUInt16BE(4);
  t.match(sig(edit(5, (hashed & 0xff) + 1)), { kind: "other", why: /subpacket/ }, "hashed area one byte longer");
  t.match(sig(Buffer.concat([body, Buffer.from([0])])), { kind: "other", why: /1 byte after the signature/ }, "a byte after the MPIs");
  t.match(sig(body.subarray(0, body.length - 1)), { kind: "other", why: /MPI/ }, "an MPI cut short");
  // The first hashed subpacket's length octet pointing past its area.
  t.match(sig(edit(6, 0xff)), { kind: "other", why: /subpacket/ }, "a subpacket overflowing its area");
  t.match(sig(edit(6, 0)), { kind: "other", why: /subpacket/ }, "a subpacket of length 0 (no type octet)");
  t.match(sig(Buffer.from([4, 0, 1, 8, 0, 0])), { kind: "other", why: /ends/ }, "cut after the hashed area");
  // A v6 signature: four-octet area lengths, a salt sized by the hash algorithm (16 for SHA2-256).
  const v6 = (salt: number, hash = 8) => Buffer.concat([Buffer.from([6, 0, 27, hash, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, salt]), Buffer.alloc(salt), Buffer.alloc(64)]);
  t.match(sig(v6(16)), { kind: "signature" }, "v6, Ed25519, SHA2-256");
  t.match(sig(v6(32, 10)), { kind: "signature" }, "v6, Ed25519, SHA2-512");
  t.match(sig(v6(15)), { kind: "other", why: /salt/ });
  t.match(sig(v6(16, 2)), { kind: "other", why: /hash algorithm 2/ }, "SHA-1 has no v6 salt size");
  t.match(shape(Buffer.alloc(MAX_SIGNATURE_BYTES + 1, good)), { kind: "other", why: /larger than 64 KiB/ }, "many signatures, too many bytes");
  t.match(shape(Buffer.concat([good, good])), { kind: "signature", count: 2 });
  t.match(shape(Buffer.concat([Buffer.from([0xca, 3]), Buffer.from("PGP"), good])), { kind: "signature" }, "a marker packet");
  t.match(shape(Buffer.concat([Buffer.from([0xca, 3]), Buffer.from("ABC"), good])), { kind: "other", why: /marker/ }, "a marker that is not one");
});

t.test("encrypted data: the version byte", async (t) => {
  const pkesk = Buffer.concat([Buffer.from([0xc1, 10, 3]), Buffer.from("0123456789abcdef", "hex"), Buffer.from([1])]);
  const data = (head: number[]) => shape(Buffer.concat([pkesk, Buffer.from(head)]));
  t.match(data([0xd2, 5, 1]), { kind: "encrypted", data: "integrity-protected encrypted data" }, "SEIPD v1");
  t.match(data([0xd2, 5, 2]), { kind: "encrypted" }, "SEIPD v2");
  t.match(data([0xd2, 0xe9, 2]), { kind: "encrypted" }, "SEIPD v2, partial length: the first chunk holds the version");
  t.match(data([0xd4, 5, 1]), { kind: "encrypted", data: "AEAD encrypted data" }, "AEAD v1");
  t.match(data([0xd2, 5, 3]), { kind: "other", why: /of version 3/ });
  t.match(data([0xd4, 5, 2]), { kind: "other", why: /of version 2/ });
  t.match(data([0xd2, 0]), { kind: "other", why: /no version/ }, "an empty body");
  t.match(data([0xd2, 5]), { kind: "other", why: /ends inside/ }, "the file ends before the version");
  t.match(classify(Buffer.concat([pkesk, Buffer.from([0xd2, 0xe9])]), 1 << 20), { kind: "other", why: /nothing decisive/ }, "the head ends before it");
  t.match(data([0xc9, 5, 1]), { kind: "other", why: /without integrity protection/ }, "SED (tag 9)");
  t.match(data([0xa4, 5, 1]), { kind: "other", why: /without integrity protection/ }, "SED, old format");
  const g = gpgHome(t);
  t.match(shape(g.gpg(["--passphrase", "pw", "--rfc2440", "-c"], "x")), { kind: "other", why: /tag 9/ }, "what gpg --rfc2440 writes");
});

t.test("armor: nothing but whitespace after the END line", async (t) => {
  const g = gpgHome(t);
  const small = g.gpg(["-r", g.fpr, "-e", "--armor"], "x");
  const big = g.gpg(["-r", g.fpr, "-z", "0", "-e", "--armor"], crypto.randomBytes(200 * 1024));
  const sig = g.gpg(["-u", g.fpr, "--armor", "--detach-sign"], "x");
  t.ok(big.length > 2 * HEAD_BYTES, "the END line is far beyond the head");
  const crlf = (b: Buffer) => Buffer.from(b.toString("latin1").replace(/\n/g, "\r\n"), "latin1");
  for (const [name, file, kind] of [
    ["small", small, "encrypted"],
    ["big", big, "encrypted"],
    ["signature", sig, "signature"],
  ] as const) {
    t.match(shape(file), { kind, armored: true }, name);
    t.match(shape(Buffer.concat([file, Buffer.from(" \n\t\r\n\n")])), { kind }, `${name}, whitespace after END`);
    t.match(shape(crlf(file)), { kind }, `${name}, CRLF lines`);
    t.match(shape(Buffer.concat([file, Buffer.from("x")])), { kind: "other", why: /after the armor's END line/ }, `${name}, a byte after END`);
    // (Twice a big one passes: its first END line is in the middle, which is not read; see walkArmored.)
    if (file.length < HEAD_BYTES) t.match(shape(Buffer.concat([file, Buffer.from("\n"), file])), { kind: "other", why: /after the armor's END line/ }, `${name}, twice`);
    const noEnd = file.subarray(0, file.lastIndexOf("-----END"));
    t.match(shape(noEnd), { kind: "other", why: /END line/ }, `${name}, without its END line`);
    const otherEnd = Buffer.from(file.toString("latin1").replace(/END PGP (MESSAGE|SIGNATURE)/, "END PGP PUBLIC KEY BLOCK"), "latin1");
    t.match(shape(otherEnd), { kind: "other", why: /END line/ }, `${name}, the END of another block`);
  }
  // Past the head, only the last KiBs are read: a line that is not base64 there is refused.
  const end = big.lastIndexOf("-----END");
  const planted = Buffer.concat([big.subarray(0, end - 200), Buffer.from("root:x:0:0:root:/root:/bin/bash\n"), big.subarray(end - 200)]);
  t.match(shape(planted), { kind: "other", why: /not base64/ }, "text among the last lines");
  const blanks = Buffer.alloc(3 * HEAD_BYTES, " \r\n");
  t.match(shape(Buffer.concat([small, blanks])), { kind: "encrypted" }, "a message with 192 KiB of blanks after it");
  const hidden = Buffer.concat([small, blanks, Buffer.from("root:x:0:0"), Buffer.alloc(TAIL_BYTES, "\n")]);
  t.match(shape(hidden), { kind: "other", why: /after the armor's END line/ }, "...and text among them, past the head and before the tail");
  t.match(shape(Buffer.concat([sig, blanks])), { kind: "other", why: /larger than 64 KiB/ }, "a signature with 192 KiB of blanks after it");
});
