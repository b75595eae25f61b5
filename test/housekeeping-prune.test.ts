import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { sandbox, snapshot, auditLines, gateIds, BIN, type Sandbox } from "./helpers/env.js";
import { serviceContent } from "../src/remote/schedule.js";
import { chain, fullSet, incSet, plant, runRoot, exists, ts } from "./helpers/duplicity.js";
import { versionKey } from "../src/vault/versions.js";
import { ARRIVALS_FILE, readArrivals } from "../src/vault/arrivals.js";
import { SftpClient, FX } from "./helpers/sftp-client.js";
import { FULL_ONLY } from "./helpers/scale.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const base = Date.UTC(2025, 0, 1);
const NOW = Date.now();
// These tests are about the keep rules: the lowest retention floor, one day, leaves them the say over
// chains planted days ago (housekeeping-retention.test.ts tests the floor itself).
const FLOOR_1D = { housekeeping: { retentionDays: 1 } };

interface Planted {
  A: string[];
  B: string[];
  C: string[];
}

/** Three chains in host/: A arrived 30 days ago, B 20 days ago, C an hour ago; plus other files. */
function threeChains(sb: Sandbox): Planted {
  const A = chain(base, 2);
  const B = chain(base + 10 * DAY, 2);
  const C = chain(base + 20 * DAY, 1);
  plant(sb, "host", A, NOW - 30 * DAY);
  plant(sb, "host", B, NOW - 20 * DAY);
  plant(sb, "host", C, NOW - HOUR);
  plant(sb, "host", ["notes.txt"], NOW - 40 * DAY);
  return { A, B, C };
}

function present(sb: Sandbox, dir: string, names: string[]): boolean[] {
  return names.map((n) => exists(path.join(sb.root, dir, n)));
}

const all = (xs: boolean[]) => xs.every(Boolean);
const none = (xs: boolean[]) => !xs.some(Boolean);

function recorded(sb: Sandbox): string[] {
  return fs
    .readFileSync(path.join(sb.state, ARRIVALS_FILE), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { p: string }).p);
}

t.test("prune --keep-full 1 removes older chains whole, with their versions and arrival records", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  const { A, B, C } = threeChains(sb);
  const kept = path.join(sb.state, "versions", versionKey(`host/${A[1]}`));
  fs.mkdirSync(kept, { recursive: true });
  fs.writeFileSync(path.join(kept, "1"), "old bytes");
  // The version is planted now, where the replace policy would have kept it before A's last file
  // arrived: a clock a day and a half on puts it past the one-day floor too.
  const r = await runRoot(sb, ["prune", "--keep-full", "1", "--now", new Date(NOW + 36 * HOUR).toISOString()]);
  t.equal(r.code, 0, r.stderr + r.stdout);
  t.ok(none(present(sb, "host", [...A, ...B])), "A and B removed");
  t.ok(all(present(sb, "host", [...C, "notes.txt"])), "C and the other file kept");
  t.notOk(exists(kept), "the versions of a removed file went with it");
  t.match(r.stdout, /kept \.?host\/duplicity-full\.20250121T000000Z… \(\d+ files\): the newest chain/);
  t.match(r.stdout, /left alone \(1\):\n  host\/notes.txt: not a duplicity file/);
  const paths = recorded(sb);
  t.notOk(paths.some((p) => A.includes(p.slice(5)) || B.includes(p.slice(5))), "records of removed files dropped");
  t.ok(C.every((n) => paths.includes(`host/${n}`)), "records of kept files stay");
  const lines = auditLines(sb);
  t.equal(lines.filter((l) => l.event === "prune-chain").length, 2);
  t.match(lines.find((l) => l.event === "prune"), { removedChains: 2, removedFiles: A.length + B.length, removedVersions: 1, keepFull: 1 });
});

t.test("prune --keep-full 2 keeps two; --older-than keeps what arrived recently; both together must both agree", FULL_ONLY, async (t) => {
  for (const [args, gone] of [
    [["--keep-full", "2"], ["A"]],
    [["--older-than", "15d"], ["A", "B"]],
    [["--older-than", "25d"], ["A"]],
    [["--keep-full", "1", "--older-than", "25d"], ["A"]],
    [["--keep-full", "2", "--older-than", "1d"], ["A"]],
  ] as [string[], string[]][]) {
    const sb = sandbox(t, { config: FLOOR_1D });
    const chains = threeChains(sb);
    const r = await runRoot(sb, ["prune", ...args]);
    t.equal(r.code, 0, r.stderr);
    for (const k of ["A", "B", "C"] as const) {
      const p = present(sb, "host", chains[k]);
      if (gone.includes(k)) t.ok(none(p), `${args.join(" ")}: ${k} removed`);
      else t.ok(all(p), `${args.join(" ")}: ${k} kept`);
    }
  }
});

// ---- issue 17, item 7: N from the config when no option says what to keep
t.test("prune and hourly without --keep-full keep the config's housekeeping.keepFull; the option still wins", async (t) => {
  for (const [cmd, args, keepFull, gone] of [
    ["prune", [], 2, ["A"]],
    ["hourly", [], 1, ["A", "B"]],
    ["prune", ["--keep-full", "2"], 1, ["A"]],
  ] as [string, string[], number, string[]][]) {
    const what = `${cmd} ${args.join(" ")} with housekeeping.keepFull ${keepFull}`;
    const sb = sandbox(t, { config: { housekeeping: { retentionDays: 1, keepFull } } });
    const chains = threeChains(sb);
    // hourly's metrics step: into the sandbox, never the host's node exporter file.
    const r = await runRoot(sb, [cmd, ...args, ...(cmd === "hourly" ? ["--metrics-output", path.join(sb.dir, "metrics.prom")] : [])]);
    t.equal(r.code, 0, `${what}: ${r.stderr}`);
    for (const k of ["A", "B", "C"] as const) {
      const p = present(sb, "host", chains[k]);
      if (gone.includes(k)) t.ok(none(p), `${what}: ${k} removed`);
      else t.ok(all(p), `${what}: ${k} kept`);
    }
    t.match(auditLines(sb).find((l) => l.event === "prune"), { keepFull: args.length ? 2 : keepFull, removedChains: gone.length }, `${what}: the audit line names the N it used`);
  }
});

t.test("prune orders by arrival, never by names: fakes planted by root cannot push out the newest real chain", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  const old = chain(base, 1);
  const real = chain(base + 10 * DAY, 1);
  plant(sb, ".", old, NOW - 20 * DAY);
  plant(sb, ".", real, NOW - DAY);
  // Planted behind the vault's back: no arrival record, dated in the future or after the real one.
  const fakes = [...fullSet("20991231T000000Z"), ...fullSet(ts(base + 15 * DAY)), ...incSet(ts(base + 15 * DAY), "20991231T000001Z")];
  plant(sb, ".", fakes);
  // A record that names a path but not its inode: the file was swapped after it arrived.
  const swapped = fullSet(ts(base + 16 * DAY));
  plant(sb, ".", swapped, NOW - HOUR);
  for (const n of swapped) {
    const p = path.join(sb.root, n);
    fs.renameSync(p, p + ".x");
    fs.copyFileSync(p + ".x", p);
    fs.unlinkSync(p + ".x");
  }
  const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(r.code, 0, r.stderr);
  t.ok(all(present(sb, ".", real)), "the newest real chain is kept");
  t.ok(none(present(sb, ".", old)), "the older real chain goes");
  t.ok(all(present(sb, ".", [...fakes, ...swapped])), "undated chains are left alone");
  t.match(r.stdout, /kept \.\/duplicity-full\.20991231T000000Z… \(\d+ files\): no arrival record/);
});

t.test("prune never removes a chain an unfinished set builds on, nor an unfinished full", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  const A = [...chain(base, 1), ...incSet(ts(base + DAY), ts(base + 2 * DAY), { manifest: false })];
  const B = chain(base + 10 * DAY, 1);
  const U = fullSet(ts(base + 5 * DAY), { manifest: false });
  plant(sb, "h", A, NOW - 30 * DAY);
  plant(sb, "h", U, NOW - 25 * DAY);
  plant(sb, "h", B, NOW - DAY);
  const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(r.code, 0, r.stderr);
  t.ok(all(present(sb, "h", [...A, ...U, ...B])));
  t.equal((String(r.stdout).match(/an unfinished backup set builds on it/g) ?? []).length, 2);
});

t.test("prune follows no link: symlinks, hard links and a FIFO among a chain's names; a linked directory", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  const { uid, gid } = gateIds();
  const canary = path.join(sb.outside, "canary.txt");
  fs.chownSync(canary, uid, gid);
  const A = chain(base, 1);
  const B = chain(base + 10 * DAY, 1);
  plant(sb, "h", A, NOW - 30 * DAY);
  plant(sb, "h", B, NOW - DAY);
  const [v1, v2, sig] = [A[0]!, A[1]!, A[2]!];
  fs.unlinkSync(path.join(sb.root, "h", v1));
  fs.symlinkSync(canary, path.join(sb.root, "h", v1));
  fs.unlinkSync(path.join(sb.root, "h", v2));
  fs.linkSync(canary, path.join(sb.root, "h", v2));
  fs.unlinkSync(path.join(sb.root, "h", sig));
  execFileSync("mkfifo", [path.join(sb.root, "h", sig)]);
  // A directory link into the outside, holding an old chain with arrival records under its name.
  const outsideChain = chain(base - 30 * DAY, 0);
  for (const n of outsideChain) fs.writeFileSync(path.join(sb.outside, "sub", n), "outside\n");
  fs.symlinkSync(path.join(sb.outside, "sub"), path.join(sb.root, "linked"));
  const { recordArrival } = await import("../src/vault/arrivals.js");
  for (const n of outsideChain) recordArrival(sb.state, `linked/${n}`, fs.statSync(path.join(sb.outside, "sub", n)), NOW - 60 * DAY);
  const before = snapshot(sb.outside);
  const r = await runRoot(sb, ["prune", "--keep-full", "1"], 60_000);
  t.equal(r.code, 0, r.stderr);
  t.same(snapshot(sb.outside), before, "nothing outside changed or removed; canaries intact");
  t.match(r.stdout, new RegExp(`h/${v1.replace(/\./g, "\\.")}: symbolic link`));
  t.match(r.stdout, /file with more than one link/);
  t.match(r.stdout, /FIFO/);
  t.ok(none(present(sb, "h", A.slice(3))), "the chain's plain files are removed");
  t.ok(all(present(sb, "h", [v1, v2, sig])), "the odd entries are left");
  t.ok(all(present(sb, "h", B)));
});

t.test("prune warns (exit 5, audit, stderr) when nothing arrived for longer than configured", async (t) => {
  const sb = sandbox(t, { config: { housekeeping: { ...FLOOR_1D.housekeeping, warnNoArrivalHours: 24 } } });
  plant(sb, ".", chain(base, 0), NOW - 3 * DAY);
  const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(r.code, 5);
  t.match(r.stderr, /WARNING: nothing arrived for 3 days/);
  t.match(auditLines(sb).at(-1), { event: "no-arrivals", anomaly: true, level: "warn" });

  const empty = sandbox(t, { config: FLOOR_1D });
  const e = await runRoot(empty, ["prune", "--older-than", "90d"]);
  t.equal(e.code, 5);
  t.match(e.stderr, /no arrival was ever recorded/);
});

t.test("prune --dry-run changes nothing; bad arguments are refused", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  threeChains(sb);
  const before = snapshot(sb.root);
  const log = fs.readFileSync(path.join(sb.state, ARRIVALS_FILE));
  const r = await runRoot(sb, ["prune", "--keep-full", "1", "--dry-run"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /would remove host\/duplicity-full\.20250101T000000Z/);
  t.same(snapshot(sb.root), before);
  t.same(fs.readFileSync(path.join(sb.state, ARRIVALS_FILE)), log);
  for (const [args, re] of [
    [["--keep-full", "0"], /at least 1/],
    [["--keep-full", "x"], /whole number/],
    [["--older-than", "3x"], /not a duration/],
    [["--keep-full", "1", "--keep-full", "2"], /given twice/],
    [["--delete-everything"], /unknown option/],
  ] as [string[], RegExp][]) {
    const b = await runRoot(sb, ["prune", ...args]);
    t.equal(b.code, 2, args.join(" "));
    t.match(b.stderr, re);
  }
  t.same(snapshot(sb.root), before);
});

// ---- issue 16, item 4: only regular files are chain members; one bad entry stops nothing
/** Chain A (old, removable under --keep-full 1) and B (new) in h/; A's last set ends at `aEnd`. */
function twoChains(sb: Sandbox): { A: string[]; B: string[]; aEnd: string } {
  const A = chain(base, 1);
  const B = chain(base + 10 * DAY, 1);
  plant(sb, "h", A, NOW - 30 * DAY);
  plant(sb, "h", B, NOW - DAY);
  return { A, B, aEnd: ts(base + DAY) };
}

t.test("16.4: a directory named like a chain's file is no member: prune removes the chain, reports the directory, exits 0", async (t) => {
  const sb = sandbox(t);
  const { A, B, aEnd } = twoChains(sb);
  // Made before MKDIR obeyed the name rules: the manifest of an incremental that continues A.
  const odd = `duplicity-inc.${aEnd}.to.${ts(base + 2 * DAY)}.manifest.gpg`;
  fs.mkdirSync(path.join(sb.root, "h", odd));
  fs.writeFileSync(path.join(sb.root, "h", odd, "inside.gpg"), "what the directory holds\n");
  // What must stay exactly as it was: the directory and what it holds, chain B, and all outside the root.
  const kept = () => ({
    odd: snapshot(path.join(sb.root, "h", odd)),
    b: B.map((n) => snapshot(path.join(sb.root, "h", n))["."]),
    outside: snapshot(sb.outside),
    home: snapshot(sb.home),
  });
  const before = kept();
  const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(r.code, 0, `no EISDIR, no failure: ${r.stderr}`);
  t.same(kept(), before, "the directory, what it holds, chain B and everything outside the root: byte-identical");
  t.ok(none(present(sb, "h", A)), "chain A removed");
  t.ok(all(present(sb, "h", B)), "chain B kept");
  t.ok(fs.statSync(path.join(sb.root, "h", odd)).isDirectory(), "the directory is left alone");
  t.match(r.stdout, new RegExp(`h/${odd.replace(/\./g, "\\.")}: directory, named like a duplicity file: never part of a chain`));
  const again = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(again.code, 0, `and the next run too: ${again.stderr}`);
  t.same(kept(), before, "still byte-identical after the second run");
});

t.test("16.4: one file prune cannot remove (immutable: EPERM) does not stop it; the rest goes, exit 4 names it", async (t) => {
  const sb = sandbox(t);
  const { A, B } = twoChains(sb);
  const stuck = path.join(sb.root, "h", A[0]!);
  execFileSync("chattr", ["+i", stuck]);
  try {
    const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
    t.equal(r.code, 4, "the run fails");
    t.match(r.stdout, new RegExp(`h/${A[0]!.replace(/\./g, "\\.")}: failed: EPERM`));
    t.match(r.stderr, /1 entries failed/);
    t.ok(exists(stuck), "the immutable file stays");
    t.ok(none(present(sb, "h", A.slice(1))), "every other file of chain A is removed");
    t.ok(all(present(sb, "h", B)));
  } finally {
    execFileSync("chattr", ["-i", stuck]);
  }
});

t.test("16.4: the hourly unit runs seal, prune and record-head even when one fails, and the unit fails", async (t) => {
  // The unit passes no --keep-full: prune keeps the config's housekeeping.keepFull.
  const sb = sandbox(t, { config: { housekeeping: { keepFull: 1 } } });
  const { A } = twoChains(sb);
  const stuck = path.join(sb.root, "h", A[0]!);
  execFileSync("chattr", ["+i", stuck]);
  try {
    const unit = serviceContent({ label: "test", launcher: BIN, config: sb.config, audit: sb.audit, root: sb.root, state: sb.state, keepFull: 1, access: "append-only" });
    const ok = new Set([0, ...(unit.match(/^SuccessExitStatus=(.*)$/m)?.[1]?.split(" ").map(Number) ?? [])]);
    // systemd runs a oneshot unit's ExecStart lines in order and stops at the first failure.
    let failed: number | undefined;
    let stderr = "";
    for (const line of unit.split("\n").filter((l) => l.startsWith("ExecStart="))) {
      const [bin, ...args] = line.slice("ExecStart=".length).split(" ");
      const r = spawnSync(bin!, args, { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
      stderr += r.stderr;
      if (!ok.has(r.status ?? -1)) {
        failed = r.status ?? -1;
        break;
      }
    }
    t.equal(failed, 4, "the unit fails (systemctl --failed shows it)");
    t.match(stderr, /validate-backup prune: 1 entries failed/, "prune's failure is in the journal");
    t.ok(fs.existsSync(`${sb.audit}.head`), "and the audit log's head was still recorded");
    const events = auditLines(sb).map((l) => l.event);
    t.ok(events.includes("seal") && events.includes("prune"), "seal and prune both ran");
  } finally {
    execFileSync("chattr", ["-i", stuck]);
  }
});

t.test("a client renaming its own file in a loop grows neither prune's memory nor, after prune, the record", async (t) => {
  const sb = sandbox(t, { config: FLOOR_1D });
  const c = SftpClient.gate(sb);
  await c.init();
  t.equal((await c.mkdir("h")).status?.code, FX.OK);
  t.equal((await c.put("h/a0", "bytes\n")).status?.code, FX.OK);
  const RENAMES = 300;
  for (let i = 0; i < RENAMES; i++) t.equal((await c.rename(`h/a${i}`, `h/a${i + 1}`)).status?.code, FX.OK, `rename ${i}`, { diagnostic: false });
  await c.end();
  const record = path.join(sb.state, ARRIVALS_FILE);
  t.equal(fs.readFileSync(record, "utf8").trim().split("\n").length, RENAMES + 1, "one line per publish and rename");
  // Prune reads the record: one entry, the file where it is now.
  const stateFd = fs.openSync(sb.state, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(stateFd));
  t.same([...readArrivals(stateFd).keys()], [`h/a${RENAMES}`], "the renames replaced each other's record");
  const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
  t.equal(r.code, 0, r.stderr + r.stdout);
  const left = fs.readFileSync(record, "utf8").trim().split("\n");
  t.equal(left.length, 1, "prune compacted the record though it removed nothing");
  t.match(JSON.parse(left[0]!), { p: `h/a${RENAMES}` });
  t.equal(fs.readFileSync(path.join(sb.root, `h/a${RENAMES}`), "utf8"), "bytes\n", "the file is untouched");
});

t.test("a read-only (pull) key: no seal, no prune, whoever runs them", async (t) => {
  const sb = sandbox(t, { config: { access: "read-only" }, files: { "out/duplicity-full.20250101T000000Z.manifest.gpg": "m\n" } });
  const before = snapshot(sb.dir);
  for (const args of [["seal"], ["prune", "--keep-full", "1"]]) {
    const r = await runRoot(sb, args);
    t.equal(r.code, 2, `${args[0]} refused`);
    t.match(r.stderr, new RegExp(`a read-only key gets no ${args[0]}: its tree is SOURCE's own outgoing data`));
  }
  t.same(snapshot(sb.dir), before, "SOURCE's outgoing files untouched: not chowned, not removed");
});
