// verify against damage anywhere in a volume: one bit changed at every offset of a volume's first
// 4 KiB (where the session keys and the start of the encrypted data lie: an earlier verify passed 143
// of 723 such copies) and at 100 random later offsets, each copy judged as the command judges it.
// Its own file: at the full scale it runs 4,196 whole-set verifications.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { Rng } from "./helpers/rng.js";
import { gpgHome, duplicity, randomSource } from "./helpers/pgp.js";
import { QUICK } from "./helpers/scale.js";
import { openVerify, statusOf } from "../src/pgp/verify.js";

const find = (dir: string, re: RegExp) => fs.readdirSync(dir).filter((n) => re.test(n)).sort();

t.test("one volume changed at every offset of its first 4 KiB and at 100 random later offsets", async (t) => {
  const g = gpgHome(t);
  // One volume of about 20 KB: every case is a whole set judged again (three gpg runs).
  const src = randomSource(g, 20_000);
  const target = path.join(g.dir, "target");
  duplicity(g, ["full", src, `file://${target}`]);
  const vol = find(target, /\.vol1\.difftar\.gpg$/)[0]!;
  const original = fs.readFileSync(path.join(target, vol));
  const seed = Number(process.env.VERIFY_SWEEP_SEED ?? 20261207);
  const rng = new Rng(seed);
  // CI's quick scale takes every 8th offset of the first 4 KiB; the full run takes each one.
  const step = QUICK ? 8 : 1;
  const offsets: number[] = [];
  for (let o = 0; o < 4096; o += step) offsets.push(o);
  for (let i = 0; i < 100; i++) offsets.push(4096 + rng.int(original.length - 4096));
  const v = await openVerify({ signers: [g.pub], recipients: [], secretKey: g.sec });
  t.teardown(() => v.close());
  const passed: number[] = [];
  let byGpg = 0;
  const started = Date.now();
  // Two copies judged at once: gpg waits on its agent as much as it computes.
  let next = 0;
  await Promise.all(
    [0, 1].map(async (k) => {
      const d = path.join(g.dir, `sweep${k}`);
      fs.cpSync(target, d, { recursive: true });
      while (next < offsets.length) {
        const off = offsets[next++]!;
        const b = Buffer.from(original);
        b[off] = b[off]! ^ (1 << (off % 8)); // one bit, a different one at each offset
        fs.writeFileSync(path.join(d, vol), b);
        const r = await v.dir(d, () => {});
        const row = r.rows.find((x) => x.file === vol);
        if (!row || statusOf(row) === "OK" || r.problems === 0) passed.push(off);
        if (row?.problems.some((p) => p.status === "DAMAGED" || p.status === "BAD SIGNATURE")) byGpg++;
      }
    }),
  );
  t.same(passed, [], `${offsets.length} damaged copies (seed ${seed}), none passed`);
  t.comment(`${offsets.length} cases in ${((Date.now() - started) / 1000).toFixed(1)} s; gpg's own verdict failed ${byGpg} of them (the manifest's hash caught every one)`);
});
