// The retention floor (issue 16, item 1): whoever holds SOURCE's key uploads more tiny fake complete
// chains than --keep-full, and the next scheduled prune must still remove no real file that arrived
// less than housekeeping.retentionDays ago. Past the floor (the clock given with --now, never slept
// for) the keep rules apply as before. Versions kept by the replace policy obey the same floor.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, run, auditLines, BIN, type Sandbox } from "./helpers/env.js";
import { chain, fullSet, incSet, plant, runRoot, exists, ts, uploadSftp } from "./helpers/duplicity.js";
import { commands } from "../src/remote/schedule.js";
import { loadConfig } from "../src/config/load.js";
import { versionKey } from "../src/vault/versions.js";
import { ARRIVALS_FILE } from "../src/vault/arrivals.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const base = Date.UTC(2025, 0, 1);

/** The prune command line install-remote schedules for this sandbox's config, as argv. */
function scheduledPrune(sb: Sandbox): string[] {
  const p = loadConfig(sb.config);
  const line = commands({ label: p.label, launcher: BIN, config: sb.config, audit: sb.audit, root: p.root, state: p.state, keepFull: p.housekeeping.keepFull, access: p.access }).prune;
  return line.split(" ");
}

const sha = (p: string) => crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");

t.test("fake complete chains uploaded with SOURCE's key do not make the scheduled prune remove real chains younger than the floor", async (t) => {
  const sb = sandbox(t);
  const real = [...chain(base, 2), ...chain(base + 10 * DAY, 1)];
  const realFiles = real.map((n): [string, Buffer] => [n, crypto.randomBytes(2000 + (n.length % 7) * 100)]);
  await uploadSftp(t, sb, "host", realFiles);
  const before = new Map(real.map((n) => [n, sha(path.join(sb.root, "host", n))]));

  // The attack: one manifest per set makes a complete full chain; five of them, more than --keep-full 4.
  const fakes = Array.from({ length: 5 }, (_, i) => `duplicity-full.${ts(base + (20 + i) * DAY)}.manifest.gpg`);
  await uploadSftp(t, sb, "host", fakes.map((n): [string, Buffer] => [n, Buffer.from([0x8c, 0x01, 0x00])]));

  const argv = scheduledPrune(sb);
  t.match(argv.join(" "), / prune --config \S+$/, "the scheduled command line: N is the config's housekeeping.keepFull (4)");
  const r = await run(argv, { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  for (const n of real) t.equal(exists(path.join(sb.root, "host", n)) && sha(path.join(sb.root, "host", n)), before.get(n), `${n} byte-identical`);
  t.match(r.stdout.toString(), /retention floor: nothing that arrived after \S+ is removed \(housekeeping\.retentionDays 30\)/);
  t.match(r.stdout.toString(), /kept host\/duplicity-full\.20250101T000000Z… \(\d+ files\): its last file arrived 0 hours ago, within the retention floor \(housekeeping\.retentionDays 30\)/);
  t.match(auditLines(sb).find((l) => l.event === "prune"), { removedChains: 0, removedFiles: 0, retentionDays: 30 });

  // Past the floor, the keep rules decide as before: four newer complete chains push out the real ones.
  const later = new Date(Date.now() + 31 * DAY).toISOString();
  const p = await run([...argv, "--now", later], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
  t.equal(p.code, 5, "nothing arrived for 31 days: the warning exit");
  t.ok(real.every((n) => !exists(path.join(sb.root, "host", n))), "the real chains go once the floor has passed");
  t.ok(fakes.slice(1).every((n) => exists(path.join(sb.root, "host", n))), "the four newest chains stay");
  t.notOk(exists(path.join(sb.root, "host", fakes[0]!)), "the oldest fake has four newer ones too");
  t.match(auditLines(sb).filter((l) => l.event === "prune").at(-1), { now: later, retentionDays: 30 });
});

t.test("a version the replace policy kept through the gate holds its chain for the floor, even when every file arrived long ago", async (t) => {
  const sb = sandbox(t);
  const set = fullSet(ts(base), { vols: 2 });
  const [vol1, vol2, sig, manifest] = set as [string, string, string, string];
  const bytes = (n: string) => crypto.createHash("sha256").update(n).digest();
  await uploadSftp(t, sb, "host", [vol1, vol2, sig].map((n): [string, Buffer] => [n, bytes(n)]));
  // duplicity resuming: the last volume again (the old bytes go to state/versions), then the manifest.
  await uploadSftp(t, sb, "host", [[vol2, Buffer.from("resumed volume\n")], [manifest, bytes(manifest)]]);
  const area = path.join(sb.state, "versions", versionKey(`host/${vol2}`));
  t.ok(exists(path.join(area, "1")), "the replaced bytes were kept");
  // Root moves every arrival 40 days back: the chain's files are past the floor, the version is not.
  const log = path.join(sb.state, ARRIVALS_FILE);
  fs.writeFileSync(log, fs.readFileSync(log, "utf8").replace(/"t":(\d+)/g, (_m, ms: string) => `"t":${Number(ms) - 40 * DAY}`));
  const fakes = Array.from({ length: 5 }, (_, i) => `duplicity-full.${ts(base + (20 + i) * DAY)}.manifest.gpg`);
  await uploadSftp(t, sb, "host", fakes.map((n): [string, Buffer] => [n, Buffer.from([0x8c, 0x01, 0x00])]));

  const argv = scheduledPrune(sb);
  const r = await run(argv, { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.toString(), new RegExp(`kept host/duplicity-full\\.${ts(base)}… \\(4 files\\): a version of ${vol2.replace(/\./g, "\\.")} was kept 0 hours ago, within the retention floor`));
  t.ok(set.every((n) => exists(path.join(sb.root, "host", n))) && exists(path.join(area, "1")), "the chain and its version stay");

  const p = await run([...argv, "--now", new Date(Date.now() + 31 * DAY).toISOString()], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
  t.equal(p.code, 5, p.stderr);
  t.ok(set.every((n) => !exists(path.join(sb.root, "host", n))), "past the floor the chain goes");
  t.notOk(exists(area), "with its versions");
});

t.test("the floor holds for --older-than, for a file without an arrival record and for kept versions; housekeeping.retentionDays changes it", async (t) => {
  const sb = sandbox(t);
  const NOW = Date.now();
  const old = chain(base, 1); // every file recorded, 40 days ago, with a version kept just now
  const unrecorded = fullSet(ts(base + 5 * DAY)); // recorded 40 days ago, but an incremental has no record
  const unrecInc = incSet(ts(base + 5 * DAY), ts(base + 6 * DAY));
  const recent = chain(base + 8 * DAY, 0); // arrived 10 days ago
  plant(sb, "h", old, NOW - 40 * DAY);
  plant(sb, "h", unrecorded, NOW - 40 * DAY);
  plant(sb, "h", unrecInc);
  plant(sb, "h", recent, NOW - 10 * DAY);
  for (let i = 0; i < 3; i++) plant(sb, "h", fullSet(ts(base + (20 + i) * DAY), { vols: 0 }), NOW - HOUR);
  const kept = path.join(sb.state, "versions", versionKey(`h/${old[1]}`));
  fs.mkdirSync(kept, { recursive: true });
  fs.writeFileSync(path.join(kept, "1"), "bytes the replace policy kept\n");
  const all = [...old, ...unrecorded, ...unrecInc, ...recent];

  const r = await runRoot(sb, ["prune", "--keep-full", "1", "--older-than", "1d"]);
  t.equal(r.code, 0, r.stderr);
  t.ok(all.every((n) => exists(path.join(sb.root, "h", n))), "nothing younger than the floor goes");
  t.ok(exists(path.join(kept, "1")), "the version stays");
  const out = r.stdout.toString();
  t.match(out, new RegExp(`kept h/duplicity-full\\.${ts(base)}… .*: a version of ${old[1]!.replace(/\./g, "\\.")} was kept 0 hours ago, within the retention floor`));
  t.match(out, new RegExp(`kept h/duplicity-full\\.${ts(base + 5 * DAY)}… .*: h/duplicity-(inc|new-signatures)\\.${ts(base + 5 * DAY)}\\.\\S+ has no arrival record: counted as arrived now`));
  t.match(out, new RegExp(`kept h/duplicity-full\\.${ts(base + 8 * DAY)}… .*: its last file arrived 10 days ago, within the retention floor`));

  // A floor of 7 days: the chain that arrived 10 days ago may go; the unknown and the version still hold.
  sb.configure({ housekeeping: { retentionDays: 7 } });
  const s = await runRoot(sb, ["prune", "--keep-full", "1", "--older-than", "1d"]);
  t.equal(s.code, 0, s.stderr);
  t.ok(recent.every((n) => !exists(path.join(sb.root, "h", n))), "past a 7-day floor the keep rules remove it");
  t.ok([...old, ...unrecorded, ...unrecInc].every((n) => exists(path.join(sb.root, "h", n))));

  // Past the floor for the version too (the clock moved 31 days): the chain goes with its versions.
  const p = await runRoot(sb, ["prune", "--keep-full", "1", "--now", new Date(NOW + 31 * DAY).toISOString()]);
  t.equal(p.code, 5, p.stderr);
  t.ok(old.every((n) => !exists(path.join(sb.root, "h", n))), "the old chain goes");
  t.notOk(exists(kept), "with its kept versions");
  t.ok([...unrecorded, ...unrecInc].every((n) => exists(path.join(sb.root, "h", n))), "a file without a record never ages");
});

t.test("retentionDays is a whole number of at least 1; --now is checked", async (t) => {
  const sb = sandbox(t);
  for (const bad of [0, 1.5, "30"]) {
    sb.configure({ housekeeping: { retentionDays: bad } });
    const r = await runRoot(sb, ["prune", "--keep-full", "1"]);
    t.equal(r.code, 2, String(bad));
    t.match(r.stderr, /key 'housekeeping\.retentionDays'/);
  }
  sb.configure({});
  const r = await runRoot(sb, ["prune", "--keep-full", "1", "--now", "tomorrow"]);
  t.equal(r.code, 2);
  t.match(r.stderr, /--now needs a UTC time/);
});
