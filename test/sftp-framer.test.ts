// The framer (src/sftp/wire.ts) in-process: however the byte stream is cut, by reads straight into
// its buffer (space/filled, the socket path) or by chunks copied in (push, the stream fallback,
// including chunks larger than its whole buffer), the same packets come out, whole and in order;
// and a length of 0 or above the limit is refused.
import t from "tap";
import crypto from "node:crypto";
import { Framer } from "../src/sftp/wire.js";

const MAX = 1024; // a small limit: the buffer is 4 * (MAX + 4), so big chunks are cheap to make
const SEED = Number(process.env.SFTP_FRAMER_SEED ?? crypto.randomBytes(4).readUInt32BE(0));

/** mulberry32, as in sftp-fuzz: reproducible with SFTP_FRAMER_SEED. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (((x ^ (x >>> 14)) >>> 0) % n) >>> 0;
  };
}

function stream(rand: (n: number) => number, count: number): { bytes: Buffer; packets: Buffer[] } {
  const packets: Buffer[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const body = crypto.randomBytes(1 + rand(MAX));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    packets.push(body);
    parts.push(len, body);
  }
  return { bytes: Buffer.concat(parts), packets };
}

type Feed = "reads" | "chunks" | "mixed";

function run(feed: Feed, seed: number): { got: Buffer[]; want: Buffer[] } {
  const rand = rng(seed);
  const { bytes, packets } = stream(rand, 400);
  const f = new Framer(MAX);
  const got: Buffer[] = [];
  const drain = () => {
    for (let p = f.next(); p; p = f.next()) got.push(Buffer.from(p)); // a packet is valid until the next read
  };
  for (let pos = 0; pos < bytes.length; ) {
    const viaRead = feed === "reads" || (feed === "mixed" && rand(2) === 0);
    if (viaRead) {
      const room = f.space();
      const n = Math.min(1 + rand(room.length), bytes.length - pos);
      bytes.copy(room, 0, pos, pos + n);
      f.filled(n);
      pos += n;
    } else {
      // Up to three times the framer's whole buffer: push() must grow it.
      const n = Math.min(1 + rand(3 * 4 * (MAX + 4)), bytes.length - pos);
      f.push(bytes.subarray(pos, pos + n));
      pos += n;
    }
    // Sometimes hold packets back, as a full output does; unlike the pump, sometimes for several
    // reads in a row (CI once found space() empty after eight).
    if (rand(3) > 0) drain();
  }
  drain();
  return { got, want: packets };
}

for (const feed of ["reads", "chunks", "mixed"] as const) {
  t.test(`packets come out whole and in order: ${feed} (seed ${SEED})`, async (t) => {
    for (let round = 0; round < 20; round++) {
      const { got, want } = run(feed, SEED + round);
      t.equal(got.length, want.length, `round ${round}: every packet`);
      const firstBad = want.findIndex((w, i) => !got[i]?.equals(w));
      t.equal(firstBad, -1, `round ${round}: each packet byte-identical`);
    }
  });
}

t.test("space() is never empty, however many reads' packets are held back", async (t) => {
  const f = new Framer(MAX);
  const pkt = Buffer.alloc(4 + MAX, 7);
  pkt.writeUInt32BE(MAX);
  let smallest = Infinity;
  for (let pos = 0; pos < 20 * pkt.length; ) {
    const room = f.space();
    smallest = Math.min(smallest, room.length);
    if (room.length === 0) break;
    const n = Math.min(100, room.length, 20 * pkt.length - pos);
    for (let k = 0; k < n; k++) room[k] = pkt[(pos + k) % pkt.length]!;
    f.filled(n);
    pos += n;
  }
  t.ok(smallest > 0, `smallest space() was ${smallest} bytes`);
  let count = 0;
  for (let p = f.next(); p; p = f.next()) {
    if (p.length !== MAX || p.some((b) => b !== 7)) break;
    count++;
  }
  t.equal(count, 20, "every held packet comes out whole");
});

t.test("a length of 0 or above the limit is a protocol error", async (t) => {
  for (const len of [0, MAX + 1, 0xffffffff]) {
    const f = new Framer(MAX);
    const b = Buffer.alloc(8);
    b.writeUInt32BE(len);
    f.push(b);
    t.throws(() => f.next(), { code: "BAD_REQUEST" }, `length ${len}`);
  }
});
