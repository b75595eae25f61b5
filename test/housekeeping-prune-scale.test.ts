// prune on a synthetic tree of 100,000 duplicity files: it keeps exactly the chains an independent
// computation says it should, and its time grows linearly (25,000 files vs 100,000).
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, type Sandbox } from "./helpers/env.js";
import { fullSet, incSet, ts } from "./helpers/duplicity.js";
import { ARRIVALS_FILE } from "../src/vault/arrivals.js";
import { open } from "../src/housekeeping/context.js";
import { prune } from "../src/housekeeping/prune.js";
import { size, QUICK } from "./helpers/scale.js";

const DAY = 86_400_000;
const KEEP = 3;

interface GenChain {
  dir: string;
  names: string[];
  /** Arrival of the chain's first file; its files arrive one second apart. undefined: no record. */
  arrived?: number;
  complete: boolean;
  unfinished: boolean;
}

/** A seeded generator, so that a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * About `total` files in 4 directories. Name dates rise with the chain number, but the order in
 * which chains arrived is a random permutation, so ordering by names would give other answers.
 */
function generate(total: number, seed: number): GenChain[] {
  const rand = rng(seed);
  const chains: GenChain[] = [];
  const base = Date.UTC(2020, 0, 1);
  let files = 0;
  for (let i = 0; files < total; i++) {
    const dir = `host-${i % 4}`;
    const start = base + i * 40 * DAY;
    const incs = 5 + Math.floor(rand() * 20);
    const names = [...fullSet(ts(start), { vols: 1 + Math.floor(rand() * 5) })];
    for (let k = 0; k < incs; k++) names.push(...incSet(ts(start + k * DAY), ts(start + (k + 1) * DAY)));
    const roll = rand();
    const unfinished = roll < 0.03; // the last incremental lost its manifest
    const fullUnfinished = roll >= 0.03 && roll < 0.05; // a full set never finished
    if (unfinished) names.pop();
    const chainNames = fullUnfinished ? fullSet(ts(start), { vols: 2, manifest: false }) : names;
    chains.push({ dir, names: chainNames, complete: !fullUnfinished, unfinished: unfinished || fullUnfinished, arrived: roll > 0.97 || i === 1 ? undefined : 0 }); // chain 1: at least one without a record, at any size
    files += chainNames.length;
  }
  // Arrival windows that do not overlap, in a shuffled order.
  const order = chains.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const now = Date.now();
  order.forEach((ci, rank) => {
    const c = chains[ci]!;
    if (c.arrived !== undefined) c.arrived = now - (order.length - rank) * 3_600_000;
  });
  return chains;
}

function build(sb: Sandbox, chains: GenChain[]): number {
  const lines: string[] = [];
  let files = 0;
  for (const c of chains) {
    const d = path.join(sb.root, c.dir);
    fs.mkdirSync(d, { recursive: true });
    c.names.forEach((n, k) => {
      const p = path.join(d, n);
      fs.writeFileSync(p, "");
      files++;
      if (c.arrived === undefined) return;
      const st = fs.statSync(p);
      lines.push(JSON.stringify({ t: c.arrived + k * 1000, p: `${c.dir}/${n}`, i: `${st.dev}:${st.ino}` }));
    });
  }
  fs.writeFileSync(path.join(sb.state, ARRIVALS_FILE), lines.join("\n") + "\n");
  fs.mkdirSync(path.join(sb.state, "locks"), { recursive: true });
  return files;
}

/** What must remain, computed from the generator's own data, not by the code under test. */
function expected(chains: GenChain[]): Set<string> {
  const keep = new Set<string>();
  for (const dir of new Set(chains.map((c) => c.dir))) {
    const here = chains.filter((c) => c.dir === dir);
    const dated = here.filter((c) => c.arrived !== undefined).sort((a, b) => b.arrived! - a.arrived!);
    const newestComplete = dated.filter((c) => c.complete).slice(0, KEEP);
    for (const c of here) {
      // Windows do not overlap: "KEEP complete chains arrived after it" means "not among the KEEP newest".
      const stays = c.arrived === undefined || c.unfinished || c === dated[0] || newestComplete.includes(c) || dated.filter((d) => d.complete && d.arrived! > c.arrived!).length < KEEP;
      if (stays) for (const n of c.names) keep.add(`${c.dir}/${n}`);
    }
  }
  return keep;
}

function listing(sb: Sandbox): Set<string> {
  const out = new Set<string>();
  for (const dir of fs.readdirSync(sb.root)) for (const n of fs.readdirSync(path.join(sb.root, dir))) out.add(`${dir}/${n}`);
  return out;
}

async function measure(t: Test, total: number, seed: number): Promise<{ files: number; ms: number }> {
  const sb = sandbox(t);
  const chains = generate(total, seed);
  const files = build(sb, chains);
  const want = expected(chains);
  const h = open(sb.config, "prune");
  const t0 = performance.now();
  let report;
  try {
    // Chains arrived hours ago: the clock past the retention floor leaves the keep rules the say.
    report = prune(h, { keepFull: KEEP }, { now: Date.now() + (h.policy.housekeeping.retentionDays + 1) * DAY });
  } finally {
    h.close();
  }
  const ms = performance.now() - t0;
  const got = listing(sb);
  const missing = [...want].filter((p) => !got.has(p));
  const extra = [...got].filter((p) => !want.has(p));
  t.equal(missing.length, 0, `${total}: nothing kept is missing (${missing.slice(0, 3).join(", ")})`);
  t.equal(extra.length, 0, `${total}: nothing removable is left (${extra.slice(0, 3).join(", ")})`);
  t.equal(report.removedFiles, files - want.size);
  t.ok(report.chains.some((c) => c.remove) && report.chains.some((c) => !c.remove && /no arrival record/.test(c.why)), "both kinds of verdict occur");
  t.comment(`${files} files, ${chains.length} chains: prune took ${ms.toFixed(0)} ms (${((ms / files) * 1000).toFixed(1)} µs per file), removed ${report.removedFiles}`);
  return { files, ms };
}

const BIG = size("VB_PRUNE_FILES", 100_000, 8_000);

t.test(`prune --keep-full 3 on ${BIG} files keeps exactly the right chains, in linear time`, async (t) => {
  const small = await measure(t, BIG / 4, 7);
  const big = await measure(t, BIG, 11);
  const ratio = big.ms / big.files / (small.ms / small.files);
  t.comment(`time per file, ${BIG} vs ${BIG / 4}: x${ratio.toFixed(2)}`);
  // Loose: the machine is shared; a quadratic walk would be ~4x per file. At CI's small sizes fixed
  // costs dominate and the ratio says nothing: it is only reported there.
  if (!QUICK) t.ok(ratio < 2.5, `per-file time stays flat (x${ratio.toFixed(2)})`);
});
