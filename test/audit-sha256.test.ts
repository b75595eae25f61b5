// The audit chain's writer hashes a process's first lines with its own SHA-256 (src/audit/sha256.ts,
// so that a refused command never loads node:crypto), then with node:crypto. Both must give the
// same hash for every input, or the chain breaks exactly where one takes over from the other.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { Sha256, sha256Hex } from "../src/audit/sha256.js";
import { lineHash, tailHash, CHAIN_START } from "../src/audit/chain.js";

const native = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

t.test("every length around the padding boundaries, in one piece and in random pieces", async (t) => {
  let wrong: number[] = [];
  for (let n = 0; n <= 300; n++) {
    const b = crypto.randomBytes(n);
    if (sha256Hex(b) !== native(b)) wrong.push(n);
  }
  t.same(wrong, [], "one piece");
  wrong = [];
  for (let n = 0; n <= 300; n++) {
    const b = crypto.randomBytes(n);
    const h = new Sha256();
    for (let i = 0; i < n; ) {
      const k = 1 + crypto.randomInt(70);
      h.update(b.subarray(i, i + k));
      i += k;
    }
    if (h.digestHex() !== native(b)) wrong.push(n);
  }
  t.same(wrong, [], "pieces");
  t.equal(sha256Hex(Buffer.from("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "FIPS 180-4 example");
  t.equal(sha256Hex(new Uint8Array(0)), CHAIN_START, "the chain's start is the hash of nothing");
});

t.test("a few MB in uneven pieces", async (t) => {
  const big = crypto.randomBytes(3 * 1024 * 1024 + 7);
  const h = new Sha256();
  for (let i = 0; i < big.length; ) {
    const k = 1 + crypto.randomInt(100_000);
    h.update(big.subarray(i, i + k));
    i += k;
  }
  t.equal(h.digestHex(), native(big));
});

// This must stay the file's only test that calls lineHash or tailHash: the first two hashes of a
// process are the JavaScript ones (chain.ts jsTurn), and an earlier call would use them up.
t.test("lineHash and tailHash give node:crypto's hash before and after node:crypto takes over", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vb-sha-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const line = Buffer.from(`{"event":"x","pad":"${"y".repeat(700)}"}`);
  const file = path.join(dir, "log");
  fs.writeFileSync(file, Buffer.concat([Buffer.from('{"first":1}\n'), line, Buffer.from("\n")]));
  const fd = fs.openSync(file, "r");
  t.teardown(() => fs.closeSync(fd));
  const size = fs.fstatSync(fd).size;
  const hashes = [];
  for (let i = 0; i < 4; i++) hashes.push(tailHash(fd, size).hash, lineHash(line));
  t.same(hashes, Array(8).fill(native(line)));
});
