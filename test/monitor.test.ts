import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, auditLines, run, runGate, snapshot, snapshotAll, BIN, type Sandbox } from "./helpers/env.js";
import { fullSet, plant, runRoot } from "./helpers/duplicity.js";
import { parseProm } from "./helpers/prom-text.js";
import { render } from "../src/monitor/prom.js";
import { DEFAULT_OUTPUT } from "../src/monitor/metrics.js";

const HOUR = 3_600_000;
const NOW = Date.now();
const iso = (ms: number) => new Date(ms).toISOString();
const ENV = { env: { PATH: "/usr/bin:/bin" } };

const root = async (args: string[]) => {
  const r = await run([BIN, ...args], ENV, { timeoutMs: 120_000 });
  return { ...r, stdout: r.stdout.toString() };
};

t.test("the strict parser itself refuses what the format forbids", async (t) => {
  for (const bad of ['m{l="a"b"} 1\n', "m 1", 'm{l="a\\x"} 1\n', "# TYPE m gauge\nm 1\nn 1\nm 2\n", "m 1\nm 1\n", "m one\n", '1m{l="a"} 1\n', "# TYPE m gauge\n# TYPE m gauge\n"])
    t.throws(() => parseProm(bad), JSON.stringify(bad));
  const ok = parseProm(render([{ name: "m", help: 'a \\ b\nc "d"', type: "gauge", samples: [{ labels: { l: 'x"y\\z\nw' }, value: 1 }] }]));
  t.same(ok.samples[0]!.labels, { l: 'x"y\\z\nw' }, "label values survive escaping");
  t.equal(ok.help.get("m"), 'a \\ b\nc "d"');
});

t.test("metrics: one textfile-collector file, written atomically, every key's figures in the format's rules", async (t) => {
  const sb = sandbox(t, { config: { limits: { maxStoredBytes: 1_000_000 }, housekeeping: { minAgeMinutes: 0 } } });
  const names = fullSet("20250101T000000Z");
  plant(sb, "h", names, NOW - HOUR);
  t.equal((await runRoot(sb, ["seal"])).code, 0);
  t.equal((await runRoot(sb, ["prune", "--keep-full", "4"])).code, 0);
  // A config that cannot be read, named with the characters the format escapes.
  const bad = path.join(sb.dir, 'bad"key\\x.json');
  fs.writeFileSync(bad, "{");
  const outDir = path.join(sb.dir, "collector");
  fs.mkdirSync(outDir);
  const out = path.join(outDir, "validate-backup.prom");
  fs.writeFileSync(out, "old\n");
  const r = await root(["metrics", "--config", sb.config, "--config", bad, "--output", out]);
  t.equal(r.code, 4, "a config that cannot be read fails the run…");
  t.match(r.stderr, /bad"key\\x\.json/);
  const text = fs.readFileSync(out, "utf8");
  t.same(fs.readdirSync(outDir), ["validate-backup.prom"], "…but the file is written, and nothing is left aside");
  t.equal(fs.statSync(out).mode & 0o777, 0o644, "readable by the collector");
  const { samples, types, help } = parseProm(text);
  const get = (name: string, labels: Record<string, string> = { label: "test" }) => samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
  const bytes = names.reduce((n, f) => n + `bytes of ${f}\n`.length, 0);
  t.equal(get("validate_backup_stored_files"), names.length);
  t.equal(get("validate_backup_stored_bytes"), bytes);
  t.equal(get("validate_backup_quota_bytes"), 1_000_000);
  t.ok(get("validate_backup_quota_used_bytes")! >= bytes, "the quota counts root and state");
  t.equal(get("validate_backup_last_arrival_timestamp_seconds"), (NOW - HOUR) / 1000);
  t.equal(get("validate_backup_stale"), 0);
  t.equal(get("validate_backup_last_run_success", { label: "test", step: "seal" }), 1);
  t.equal(get("validate_backup_last_run_success", { label: "test", step: "prune" }), 1);
  t.ok(Math.abs(get("validate_backup_last_run_timestamp_seconds", { label: "test", step: "prune" })! - Date.now() / 1000) < 600);
  t.equal(get("validate_backup_refusals_last_24h"), 0);
  t.equal(get("validate_backup_config_ok", { label: "test", config: sb.config }), 1);
  t.equal(get("validate_backup_config_ok", { label: "?", config: bad }), 0, "the odd path comes back intact through the escapes");
  for (const s of samples) t.ok(types.get(s.name) === "gauge" && help.has(s.name), `${s.name}: HELP and TYPE gauge`, { diagnostic: false });
  for (const n of types.keys()) t.match(n, /^validate_backup_[a-z0-9_]+$/);
});

// Where the collector directory exists, the command would write there, outside the sandbox.
const collector = path.dirname(DEFAULT_OUTPUT);
t.test("metrics from the schedule: nothing written where no collector directory exists", { skip: fs.existsSync(collector) && `${collector} exists on this machine: metrics without --output would write there` }, async (t) => {
  const sb = sandbox(t);
  const r = await root(["metrics", "--config", sb.config]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /does not exist \(no node exporter textfile collector here\): nothing written/);
});

t.test("status: one line per key, stale first, exit 1 while one is stale; a read-only key is never stale", async (t) => {
  const fresh = sandbox(t, { config: { label: "fresh" } });
  const stale = sandbox(t, { config: { label: "stale", housekeeping: { warnNoArrivalHours: 2 } } });
  const pull = sandbox(t, { config: { label: "pull", access: "read-only" }, files: { "out/a": "x\n" } });
  plant(fresh, "h", ["a"], NOW - HOUR);
  plant(stale, "h", ["b"], NOW - 3 * HOUR);
  const all = ["--now", iso(NOW), "--config", fresh.config, "--config", stale.config, "--config", pull.config];
  const r = await root(["status", ...all]);
  t.equal(r.code, 1, "a stale key: exit 1");
  const lines = r.stdout.trim().split("\n");
  t.match(lines[0], /STATE\s+KEY\s+LAST ARRIVAL/);
  t.match(lines[1], /^ {2}STALE\s+stale\s+\S+ \(3\.0 h ago\)/, "stale first");
  t.match(r.stdout, /OK\s+fresh\s+\S+ \(1\.0 h ago\)\s+11 bytes in 1 file\s+none\s+never ran/);
  t.match(r.stdout, /OK\s+pull\s+read-only key/);
  const j = await root(["status", "--json", ...all]);
  t.equal(j.code, 1);
  const keys = (JSON.parse(j.stdout) as { keys: { label: string; state: string; secondsSinceArrival: number | null }[] }).keys;
  t.same(
    keys.map((k) => [k.label, k.state]),
    [
      ["fresh", "ok"],
      ["stale", "stale"],
      ["pull", "ok"],
    ],
  );
  t.equal(keys[1]!.secondsSinceArrival, 3 * 3600);
  const ok = await root(["status", "--config", fresh.config, "--config", pull.config]);
  t.equal(ok.code, 0, "nothing stale or failing: exit 0");
  const refused = await root(["status", "--config", fresh.config, "--bogus"]);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /unknown option '--bogus'/);
});

/** A notify command that keeps each message it gets on stdin as a file of its own. */
function recorder(sb: Sandbox): { argv: string[]; messages: () => string[] } {
  const dir = path.join(sb.dir, "told");
  fs.mkdirSync(dir);
  const script = path.join(sb.dir, "record-message");
  fs.writeFileSync(script, '#!/bin/sh\nn=$(/bin/ls "$1" | /usr/bin/wc -l)\n/bin/cat > "$1/message-$n"\n', { mode: 0o755 });
  return {
    argv: [script, dir],
    messages: () =>
      fs
        .readdirSync(dir)
        .sort()
        .map((n) => fs.readFileSync(path.join(dir, n), "utf8")),
  };
}

t.test("notify: a key whose uploads stop is told once within one hourly run, and again only after it recovered and stopped again", async (t) => {
  const sb = sandbox(t);
  const rec = recorder(sb);
  sb.configure({ housekeeping: { warnNoArrivalHours: 1, notify: rec.argv } });
  plant(sb, "h", fullSet("20250101T000000Z"), NOW);
  // The metrics step writes into the sandbox, never the host's node exporter file.
  const metrics = path.join(sb.dir, "metrics.prom");
  const hourly = (at: number) => root(["hourly", "--config", sb.config, "--keep-full", "4", "--now", iso(at), "--metrics-output", metrics]);
  let r = await hourly(NOW + HOUR / 2);
  t.equal(r.code, 0, r.stderr);
  t.match(fs.readFileSync(metrics, "utf8"), /validate_backup_/, "hourly's metrics went where --metrics-output said");
  t.equal(rec.messages().length, 0, "arriving: nothing to tell");
  r = await hourly(NOW + 2 * HOUR);
  t.equal(r.code, 5, "prune's warning");
  t.equal(rec.messages().length, 1, "stale within one run: one message");
  t.match(rec.messages()[0], /the key 'test' needs attention\.\n\n- nothing arrived for 2\.0 h \(the last file at /);
  r = await hourly(NOW + 3 * HOUR);
  t.equal(rec.messages().length, 1, "still stale an hour later: not told again");
  plant(sb, "h", fullSet("20250102T000000Z"), NOW + 3.5 * HOUR);
  // plant() hands every top-level entry of the state to the gate user, as sessions leave it; root's own stays root's.
  fs.chownSync(path.join(sb.state, "monitor"), 0, 0);
  r = await hourly(NOW + 4 * HOUR);
  t.equal(r.code, 0, r.stderr);
  t.equal(rec.messages().length, 1, "recovered: nothing to tell");
  r = await hourly(NOW + 6 * HOUR);
  t.equal(rec.messages().length, 2, "stopped again: one more message");
  t.match(rec.messages()[1], /nothing arrived for 2\.5 h/);
  const st = fs.lstatSync(path.join(sb.state, "monitor", "notify.json"));
  t.same([st.uid, st.mode & 0o777, fs.lstatSync(path.join(sb.state, "monitor")).mode & 0o777], [0, 0o600, 0o700], "root's record, root's directory");
  t.same(
    auditLines(sb)
      .filter((l) => l.event === "notify")
      .map((l) => [l.conditions, l.ok]),
    [
      [["stale"], true],
      [["stale"], true],
    ],
    "each message is in the audit log",
  );
  const hr = JSON.parse(fs.readFileSync(path.join(sb.state, "monitor", "hourly.json"), "utf8")) as { steps: { step: string; code: number }[] };
  t.same(
    hr.steps.map((s) => s.step),
    ["seal", "prune", "record-head"],
  );
});

t.test("notify: a failed step is told once; a command that fails is tried again next run", async (t) => {
  const sb = sandbox(t);
  const rec = recorder(sb);
  const failing = path.join(sb.dir, "fail");
  fs.writeFileSync(failing, "#!/bin/sh\n/bin/cat >/dev/null\necho mail is down >&2\nexit 3\n", { mode: 0o755 });
  sb.configure({ housekeeping: { notify: [failing] } });
  plant(sb, "h", ["a"], NOW);
  // A monitor directory that is not root's: a step of the run fails (the record cannot be kept).
  fs.mkdirSync(path.join(sb.state, "monitor"), { mode: 0o777 });
  fs.chmodSync(path.join(sb.state, "monitor"), 0o777);
  let r = await root(["notify", "--config", sb.config]);
  t.equal(r.code, 4);
  t.match(r.stderr, /state\/monitor must be root's own directory, mode 0700/);
  t.same(fs.readdirSync(path.join(sb.state, "monitor")), [], "nothing written in a monitor directory that is not root's");
  t.equal(auditLines(sb).filter((l) => l.event === "notify").length, 0, "and nobody told");
  fs.rmdirSync(path.join(sb.state, "monitor"));
  // seal fails: its config names a group that does not exist.
  sb.configure({ housekeeping: { notify: [failing], group: "no-such-group-x" } });
  r = await root(["hourly", "--config", sb.config, "--keep-full", "4", "--metrics-output", path.join(sb.dir, "metrics.prom")]);
  t.equal(r.code, 2, "seal's refusal of the config is the run's status");
  t.match(r.stderr, /notify: \S+ failed \(exit 3: mail is down\); the next run tries again/);
  sb.configure({ housekeeping: { notify: rec.argv, group: "no-such-group-x" } });
  r = await root(["notify", "--config", sb.config]);
  t.equal(r.code, 0, r.stderr);
  t.equal(rec.messages().length, 1);
  t.match(rec.messages()[0], /seal failed in the hourly run at \S+ \(exit 2\)/);
  r = await root(["notify", "--config", sb.config]);
  t.equal(rec.messages().length, 1, "told once");
  const s = await root(["status", "--config", sb.config]);
  t.equal(s.code, 1, "status: failing");
  t.match(s.stdout, /FAILING\s+test/);
});

t.test("housekeeping.notify must be an argv with an absolute program", async (t) => {
  const sb = sandbox(t);
  for (const notify of [["mail root"], [], "/usr/bin/mail"]) {
    sb.configure({ housekeeping: { notify } });
    const r = await root(["notify", "--config", sb.config]);
    t.equal(r.code, 2, JSON.stringify(notify));
    t.match(r.stderr, /housekeeping\.notify/);
  }
});

t.test("refusals and anomalies of the last 24 hours: counted as audit counts them, and an anomaly is told once", async (t) => {
  const sb = sandbox(t);
  const rec = recorder(sb);
  sb.configure({ housekeeping: { notify: rec.argv } });
  plant(sb, "h", ["a"], NOW);
  for (let i = 0; i < 6; i++) t.equal((await runGate(sb, `rm -rf /h${i}`)).code, 1, "refused", { diagnostic: false });
  const out = path.join(sb.dir, "vb.prom");
  t.equal((await root(["metrics", "--config", sb.config, "--output", out])).code, 0);
  const { samples } = parseProm(fs.readFileSync(out, "utf8"));
  const get = (name: string) => samples.find((s) => s.name === name)?.value;
  t.equal(get("validate_backup_refusals_last_24h"), 6);
  t.equal(get("validate_backup_anomalies_last_24h"), 1, "one burst");
  const later = await root(["metrics", "--config", sb.config, "--output", out, "--now", iso(NOW + 25 * HOUR)]);
  t.equal(later.code, 0);
  t.equal(parseProm(fs.readFileSync(out, "utf8")).samples.find((s) => s.name === "validate_backup_refusals_last_24h")?.value, 0, "a day later: none in the window");
  t.equal((await root(["notify", "--config", sb.config])).code, 0);
  t.equal(rec.messages().length, 1);
  t.match(rec.messages()[0], /1 anomaly 'refusal burst' in the last 24 hours, the last at \S+: 6 refusals from /);
  t.equal((await root(["notify", "--config", sb.config])).code, 0);
  t.equal(rec.messages().length, 1, "the same condition: not told again");
  const s = await root(["status", "--json", "--config", sb.config]);
  t.match(JSON.parse(s.stdout), { keys: [{ refusals24h: 6, anomalies24h: { "refusal burst": { count: 1 } } }] });
  // The log rotated (LOG -> LOG.1): the day's refusals are still counted.
  fs.renameSync(sb.audit, `${sb.audit}.1`);
  fs.writeFileSync(sb.audit, "");
  const rotated = await root(["status", "--json", "--config", sb.config]);
  t.match(JSON.parse(rotated.stdout), { keys: [{ refusals24h: 6 }] }, "across a rotation");
});

t.test("a verify --stored that finds a problem: its metric says 0, status says failing, notify tells once", async (t) => {
  const sb = sandbox(t);
  const rec = recorder(sb);
  sb.configure({ housekeeping: { notify: rec.argv } });
  plant(sb, "h", ["planted"], NOW); // behind the gate's back: no hash in the log
  const v = await runRoot(sb, ["verify", "--stored"]);
  t.equal(v.code, 1, "verify --stored finds the unrecorded file");
  const out = path.join(sb.dir, "vb.prom");
  t.equal((await root(["metrics", "--config", sb.config, "--output", out])).code, 0);
  const { samples } = parseProm(fs.readFileSync(out, "utf8"));
  t.equal(samples.find((s) => s.name === "validate_backup_last_run_success" && s.labels.step === "verify-stored")?.value, 0);
  t.equal(samples.find((s) => s.name === "validate_backup_failing")?.value, 1);
  const s = await root(["status", "--config", sb.config]);
  t.equal(s.code, 1);
  t.match(s.stdout, /FAILING\s+test\s.*verify-stored failed at \S+: 1 problem\(s\)/);
  for (let i = 0; i < 2; i++) t.equal((await root(["notify", "--config", sb.config])).code, 0);
  t.equal(rec.messages().length, 1, "told once");
  t.match(rec.messages()[0], /- verify-stored failed at \S+: 1 problem\(s\)/);
  t.notMatch(rec.messages()[0], /anomal/, "its anomaly line is the failed step's own condition, not a second one");
});

t.test("metrics reuses the facts a key's own run saved (each run reads its own log and tree), only when recent and its own", async (t) => {
  const sb = sandbox(t);
  plant(sb, "h", ["a"], NOW);
  t.equal((await root(["notify", "--config", sb.config, "--now", iso(NOW)])).code, 0, "no housekeeping.notify: the facts are saved all the same");
  const saved = path.join(sb.state, "monitor", "facts.json");
  const rec = JSON.parse(fs.readFileSync(saved, "utf8")) as { at: number; config: string; facts: { refusals: number } };
  t.same([rec.at, rec.config, fs.statSync(saved).uid], [NOW, sb.config, 0]);
  // A figure only the record has shows which one metrics used.
  const mark = (r: typeof rec) => fs.writeFileSync(saved, JSON.stringify(r));
  const out = path.join(sb.dir, "vb.prom");
  const refusals = async (at: number) => {
    t.equal((await root(["metrics", "--config", sb.config, "--output", out, "--now", iso(at)])).code, 0);
    return parseProm(fs.readFileSync(out, "utf8")).samples.find((s) => s.name === "validate_backup_refusals_last_24h")?.value;
  };
  mark({ ...rec, facts: { ...rec.facts, refusals: 42 } });
  t.equal(await refusals(NOW + HOUR), 42, "an hour later: the saved facts");
  t.equal(await refusals(NOW + 2 * HOUR), 0, "two hours later: gathered again");
  mark({ ...rec, config: "/elsewhere.json", facts: { ...rec.facts, refusals: 42 } });
  t.equal(await refusals(NOW + HOUR), 0, "saved for another config: gathered again");
  mark({ ...rec, facts: { ...rec.facts, refusals: 42 } });
  const s = await root(["status", "--json", "--now", iso(NOW + HOUR), "--config", sb.config]);
  t.match(JSON.parse(s.stdout), { keys: [{ refusals24h: 0 }] }, "status always gathers");
});

t.test("notify: a log that cannot be read is told (the key cannot be judged), once", async (t) => {
  const sb = sandbox(t);
  const rec = recorder(sb);
  sb.configure({ housekeeping: { notify: rec.argv } });
  plant(sb, "h", ["a"], NOW);
  fs.mkdirSync(`${sb.audit}.1`); // the rotated log, read for the last 24 hours: EISDIR
  t.teardown(() => fs.rmSync(`${sb.audit}.1`, { recursive: true, force: true }));
  const before = fs.readdirSync(sb.root);
  let r = await root(["notify", "--config", sb.config, "--now", iso(NOW + HOUR / 2)]);
  t.not(r.code, 0, `not a clean run (exit ${r.code})`);
  t.equal(rec.messages().length, 1, "told once");
  t.match(rec.messages()[0], /- the key cannot be judged: audit log .*audit\.log cannot be read: /);
  t.equal(auditLines(sb).filter((l) => l.event === "notify").length, 1, "and logged");
  r = await root(["notify", "--config", sb.config, "--now", iso(NOW + HOUR)]);
  t.equal(rec.messages().length, 1, "not told again while it lasts");
  t.same(fs.readdirSync(sb.root), before, "nothing in the root changed");
  // Nobody to tell: the key still could not be judged, and the step says so.
  sb.configure({ housekeeping: {} });
  r = await root(["notify", "--config", sb.config, "--now", iso(NOW + HOUR)]);
  t.not(r.code, 0, `no housekeeping.notify: still not a clean run (exit ${r.code})`);
  t.match(r.stderr, /the key could not be judged: audit log /);
  t.equal(rec.messages().length, 1, "and nobody told");
  t.same(fs.readdirSync(sb.root), before, "nothing in the root changed");
});

t.test("metrics: a key whose log or records cannot be read is written as failing, and the run exits 4 naming the key and why", async (t) => {
  const sb = sandbox(t);
  plant(sb, "h", ["a"], NOW);
  const out = path.join(sb.dir, "vb.prom");
  const metrics = () => root(["metrics", "--config", sb.config, "--output", out, "--now", iso(NOW + HOUR / 2)]);
  const failing = () => parseProm(fs.readFileSync(out, "utf8")).samples.find((s) => s.name === "validate_backup_failing" && s.labels.label === "test")?.value;
  let r = await metrics();
  t.equal(r.code, 0, `everything read: exit 0 (${r.stderr})`);
  fs.mkdirSync(`${sb.audit}.1`); // the rotated log, read for the last 24 hours: EISDIR
  t.teardown(() => fs.rmSync(`${sb.audit}.1`, { recursive: true, force: true }));
  fs.rmSync(out);
  r = await metrics();
  t.equal(r.code, 4, "the log cannot be read: the key was not judged, exit 4");
  t.match(r.stderr, /'test' \(\S+\): could not be judged: audit log .*cannot be read: /, "stderr names the key and why");
  t.equal(failing(), 1, "…and the file is written, the key failing");
  // The facts notify saved while the log could not be read stand for the key: still not judged.
  t.not((await root(["notify", "--config", sb.config, "--now", iso(NOW)])).code, 0);
  fs.rmSync(`${sb.audit}.1`, { recursive: true });
  r = await metrics();
  t.equal(r.code, 4, "reused facts that could not be gathered: exit 4");
  t.match(r.stderr, /'test' \(\S+\): could not be judged: audit log /);
  // A record that cannot be read (a monitor directory that is not root's).
  fs.rmSync(path.join(sb.state, "monitor"), { recursive: true });
  fs.mkdirSync(path.join(sb.state, "monitor"), { mode: 0o777 });
  fs.chmodSync(path.join(sb.state, "monitor"), 0o777);
  r = await metrics();
  t.equal(r.code, 4, "the hourly record cannot be read: exit 4");
  t.match(r.stderr, /'test' \(\S+\): could not be judged: .*state\/monitor must be root's own directory/);
  t.equal(failing(), 1);
  fs.rmdirSync(path.join(sb.state, "monitor"));
  r = await metrics();
  t.equal(r.code, 0, `all readable again: exit 0 (${r.stderr})`);
  t.equal(failing(), 0);
});

t.test("status and metrics count the tree without following a link out of it, and change nothing inside or outside", async (t) => {
  const sb = sandbox(t);
  plant(sb, "h", ["a"], NOW);
  // Links whoever writes the tree could leave: to a directory and a file outside, from root and from state.
  const big = path.join(sb.outside, "big");
  fs.mkdirSync(big);
  fs.writeFileSync(path.join(big, "f"), "x".repeat(100_000));
  fs.symlinkSync(big, path.join(sb.root, "h", "dirlink"));
  fs.symlinkSync(path.join(big, "f"), path.join(sb.root, "filelink"));
  fs.symlinkSync(big, path.join(sb.state, "statelink"));
  const before = [snapshotAll(sb), snapshot(sb.state)];
  const s = await root(["status", "--json", "--now", iso(NOW), "--config", sb.config]);
  t.equal(s.code, 0, s.stderr);
  const stored = (JSON.parse(s.stdout) as { keys: { stored: { bytes: number; files: number; quotaUsed: number } }[] }).keys[0]!.stored;
  t.same([stored.files, stored.bytes], [1, "bytes of a\n".length], "only the regular file in the root");
  t.ok(stored.quotaUsed < 100_000, `the quota's figure has nothing from outside (${stored.quotaUsed})`);
  const out = path.join(sb.dir, "vb.prom");
  t.equal((await root(["metrics", "--config", sb.config, "--output", out, "--now", iso(NOW)])).code, 0);
  const get = (name: string) => parseProm(fs.readFileSync(out, "utf8")).samples.find((x) => x.name === name)?.value;
  t.same([get("validate_backup_stored_files"), get("validate_backup_stored_bytes")], [1, "bytes of a\n".length]);
  t.same([snapshotAll(sb), snapshot(sb.state)], before, "root, state, outside and home byte-identical");
});
