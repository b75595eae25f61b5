// The token bucket behind limits.bytesPerSecond, on an injected clock: a client that sends as fast
// as it is let stays within 10% of the rate over every 10 s window, from the first byte on and
// after a pause (when the bucket is full).
import t from "tap";
import { Throttle, rsyncBwlimit } from "../src/throttle.js";

function simulate(rate: number, chunk: number, seconds: number): Array<[number, number]> {
  let now = 0;
  const th = new Throttle(rate, () => now);
  const moved: Array<[number, number]> = [];
  while (now < seconds * 1000) {
    if (now >= 20_000 && now < 25_000) now = 25_000; // the client pauses: the bucket fills
    moved.push([now, chunk]); // the read happens, then it is counted
    now += Math.max(th.spend(chunk), 0.1); // a read costs at least a little time
  }
  return moved;
}

for (const [rate, chunk] of [
  [1_000_000, 256 * 1024],
  [1_000_000, 4096],
  [100_000_000, 256 * 1024],
  [65_536, 32 * 1024],
] as const) {
  t.test(`${rate} B/s, reads of ${chunk} bytes: every 10 s window within 10%`, async (t) => {
    const moved = simulate(rate, chunk, 60);
    let worst = 0;
    for (let i = 0, j = 0, sum = 0; i < moved.length; i++) {
      sum += moved[i]![1];
      while (moved[i]![0] - moved[j]![0] >= 10_000) sum -= moved[j++]![1];
      worst = Math.max(worst, sum);
    }
    t.ok(worst <= 1.1 * rate * 10, `worst 10 s window: ${(worst / rate / 10).toFixed(3)} x the rate`);
    const total = moved.reduce((s, [, n]) => s + n, 0);
    t.ok(total >= 0.9 * rate * 55, `not held back below the rate: ${(total / rate / 55).toFixed(3)} x over the 55 s it sent`);
  });
}

t.test("rsync's unit is KiB/s", async (t) => {
  t.equal(rsyncBwlimit(1_000_000), 976);
  t.equal(rsyncBwlimit(65_536), 64);
});
