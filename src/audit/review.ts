// `validate-backup audit`: the audit log as an admin wants to read it. Sessions per key, files and
// bytes per day, every refusal with its reason and client address, and what deserves a look:
// bursts of refusals, a client address never seen before for the key, lines flagged as anomalies
// (replaced files), no upload for longer than expected, and what someone holding SOURCE's key does
// to make root's prune or SOURCE's own backups work against them: a flood of complete full chains,
// a full backup far smaller than the one before, an incremental refused because a planted set took
// its start. `--verify` checks the hash chain and the recorded heads (chain.ts); `--record-head` is
// what root's timer runs.
//
// One streaming pass per log: memory grows with the number of keys, days and refusals, not lines.
import fs from "node:fs";
import { verifyLog, recordHead, defaultHeadFile, type VerifyResult } from "./chain.js";
import { ROOT_CLIENT } from "./log.js";
import { parseName, START_TAKEN } from "../profile/duplicity.js";
import { usageText } from "../usage.js";

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
/** A burst: at least BURST_COUNT refusals from one client, each within BURST_GAP of the previous. */
export const BURST_COUNT = 5;
export const BURST_GAP_MS = 10 * 60_000;
/** A chain flood: more than FLOOD_FULLS complete full sets arriving for one directory within FLOOD_WINDOW_MS. */
export const FLOOD_FULLS = 2;
export const FLOOD_WINDOW_MS = 24 * 3_600_000;
/** A full set smaller than the previous one divided by this is suspect. */
export const SMALL_FULL_RATIO = 10;

export function parseAge(s: string): number | null {
  const m = /^(\d{1,9})([smhdw])$/.exec(s);
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : null;
}

export function parseSince(s: string, now: number): number | null {
  const age = parseAge(s);
  if (age !== null) return now - age;
  const t = /^\d{4}-\d{2}-\d{2}/.test(s) ? Date.parse(s) : NaN;
  return Number.isFinite(t) ? t : null;
}

interface Options {
  files: string[];
  since?: number;
  denied: boolean;
  json: boolean;
  maxGapMs: number;
  mode: "review" | "verify" | "record-head";
  head?: string;
}

type Setter = (o: Options, v: string) => string | void;
const WITH_VALUE: Record<string, Setter> = {
  "--file": (o, v) => void o.files.push(v),
  "--config": (o, v) => {
    try {
      const file = (JSON.parse(fs.readFileSync(v, "utf8")) as { audit?: { file?: unknown } }).audit?.file;
      if (typeof file !== "string") return `${v} has no audit.file`;
      o.files.push(file);
    } catch (e) {
      return `${v}: ${(e as Error).message}`;
    }
  },
  "--since": (o, v) => {
    const t = parseSince(v, Date.now());
    if (t === null) return `--since: '${v}' is neither a date nor an age such as 7d`;
    o.since = t;
  },
  "--max-gap": (o, v) => {
    const ms = parseAge(v);
    if (ms === null) return `--max-gap: '${v}' is not an age such as 26h`;
    o.maxGapMs = ms;
  },
  "--head": (o, v) => void (o.head = v),
};
const FLAGS: Record<string, (o: Options) => void> = {
  "--denied": (o) => void (o.denied = true),
  "--json": (o) => void (o.json = true),
  "--verify": (o) => void (o.mode = "verify"),
  "--record-head": (o) => void (o.mode = "record-head"),
};

function parseArgs(args: string[]): Options | string {
  const o: Options = { files: [], denied: false, json: false, maxGapMs: 26 * UNIT_MS.h!, mode: "review" };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (Object.hasOwn(FLAGS, a)) FLAGS[a]!(o);
    else if (Object.hasOwn(WITH_VALUE, name)) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) return `${name} needs a value`;
      const err = WITH_VALUE[name]!(o, v);
      if (err) return err;
    } else return `unknown argument '${a.slice(0, 64)}'`;
  }
  if (!o.files.length) return "which log? give --file LOG or --config F";
  if (o.head && o.files.length > 1) return "--head goes with one log only";
  return o;
}

// ---- the review ----

export interface Refusal {
  time: string;
  label: string;
  client: string;
  event: string;
  code: string;
  reason: string;
  what: string;
}

export interface Anomaly {
  time: string;
  label: string;
  kind: "refusal burst" | "new client" | "flagged" | "upload gap" | "chain flood" | "small full backup" | "blocked incremental";
  detail: string;
  /** The file or directory concerned, when there is one. */
  path?: string;
}

/** What the review knows of the full sets of one directory of one key, from the publish lines. */
interface FullSets {
  /** Unfinished full sets: set key -> name -> size (a resumed volume's later size wins). */
  open: Map<string, Map<string, number>>;
  /** The last full set completed (its manifest published). */
  last?: { name: string; bytes: number };
  /** When full sets completed within the last FLOOD_WINDOW_MS. */
  recent: number[];
}

interface KeyStats {
  label: string;
  sessions: number;
  denied: number;
  files: number;
  bytes: number;
  clients: string[];
  first: string;
  last: string;
  lastUpload: string | null;
}

interface Burst {
  start: string;
  end: number;
  endIso: string;
  count: number;
  label: string;
  client: string;
}

export interface Review {
  files: { file: string; lines: number; chain: string }[];
  since: string | null;
  keys: KeyStats[];
  days: { day: string; label: string; files: number; bytes: number }[];
  refusals: Refusal[];
  anomalies: Anomaly[];
}

const str = (v: unknown, dflt = "") => (typeof v === "string" ? v : v === undefined || v === null ? dflt : String(v));

export class Reviewer {
  private keys = new Map<string, KeyStats>();
  private days = new Map<string, { day: string; label: string; files: number; bytes: number }>();
  private known = new Map<string, Set<string>>();
  private lastUpload = new Map<string, number>();
  private bursts = new Map<string, Burst>();
  private fulls = new Map<string, FullSets>();
  readonly refusals: Refusal[] = [];
  readonly anomalies: Anomaly[] = [];

  constructor(
    private readonly since: number | undefined,
    private readonly maxGapMs: number,
    private readonly now = Date.now(),
  ) {}

  private key(label: string, time: string): KeyStats {
    let k = this.keys.get(label);
    if (!k) this.keys.set(label, (k = { label, sessions: 0, denied: 0, files: 0, bytes: 0, clients: [], first: time, last: time, lastUpload: null }));
    return k;
  }

  line(j: Record<string, unknown>): void {
    const time = str(j.time);
    const t = Date.parse(time);
    const label = str(j.label, "?");
    const client = str(j.client, "?");
    const event = str(j.event);
    const inWindow = this.since === undefined || (Number.isFinite(t) && t >= this.since);
    // What came before --since is the baseline: known clients, the last upload.
    let seen = this.known.get(label);
    if (!seen) this.known.set(label, (seen = new Set()));
    // Root's housekeeping is no client of the key: it neither is a new one nor joins the key's list.
    const own = client === ROOT_CLIENT;
    if (!own && !seen.has(client)) {
      if (seen.size > 0 && inWindow) this.anomalies.push({ time, label, kind: "new client", detail: `first session from ${client} (known: ${[...seen].join(", ")})` });
      seen.add(client);
    }
    if (event === "publish" && Number.isFinite(t)) {
      const prev = this.lastUpload.get(label);
      if (inWindow && prev !== undefined && t - prev > this.maxGapMs)
        this.anomalies.push({ time, label, kind: "upload gap", detail: `no upload for ${hours(t - prev)} (since ${new Date(prev).toISOString()})` });
      this.lastUpload.set(label, t);
      this.fullSet(label, str(j.path), typeof j.size === "number" ? j.size : 0, t, time, inWindow);
    }
    if (!inWindow) return;

    const k = this.key(label, time);
    k.last = time;
    if (!own && !k.clients.includes(client)) k.clients.push(client);
    if (event === "request") k.sessions++;
    if (event === "publish") {
      const size = typeof j.size === "number" ? j.size : 0;
      k.files++;
      k.bytes += size;
      k.lastUpload = time;
      const day = time.slice(0, 10);
      const d = this.days.get(`${day}\0${label}`) ?? { day, label, files: 0, bytes: 0 };
      d.files++;
      d.bytes += size;
      this.days.set(`${day}\0${label}`, d);
    }
    if (j.decision === "deny" || event === "error") {
      if (event === "request") k.denied++;
      this.refusals.push({ time, label, client, event, code: str(j.code), reason: str(j.reason), what: str(j.command ?? j.path) });
      this.burst(label, client, time, t);
    }
    if (j.blocked === START_TAKEN) this.anomalies.push({ time, label, kind: "blocked incremental", path: str(j.path), detail: blockedDetail(str(j.path), str(j.start), str(j.takenBy)) });
    else if (j.anomaly === true)
      this.anomalies.push({ time, label, kind: "flagged", detail: [event, str(j.reason), str(j.path)].filter(Boolean).join(": ") });
  }

  /** A published file of a full set: when its manifest completes the set, judge the set's arrival and size. */
  private fullSet(label: string, rel: string, size: number, t: number, time: string, inWindow: boolean): void {
    const slash = rel.lastIndexOf("/");
    const dir = slash < 0 ? "." : rel.slice(0, slash);
    const dn = parseName(rel.slice(slash + 1));
    if (!dn || dn.kind !== "full") return;
    const id = `${label}\0${dir}`;
    let d = this.fulls.get(id);
    if (!d) this.fulls.set(id, (d = { open: new Map(), recent: [] }));
    const sizes = d.open.get(dn.setKey) ?? new Map<string, number>();
    sizes.set(dn.name, size);
    d.open.set(dn.setKey, sizes);
    if (dn.role !== "manifest") return;
    d.open.delete(dn.setKey);
    const set = { name: `${dir}/${dn.name.replace(/\.manifest(\.gpg)?$/, "")}`, bytes: [...sizes.values()].reduce((a, b) => a + b, 0) };
    const prev = d.last;
    d.last = set;
    d.recent = d.recent.filter((x) => t - x < FLOOD_WINDOW_MS);
    d.recent.push(t);
    if (!inWindow) return;
    if (prev && set.bytes * SMALL_FULL_RATIO < prev.bytes)
      this.anomalies.push({
        time,
        label,
        kind: "small full backup",
        path: dir,
        detail:
          `the full backup ${set.name} is ${bytes(set.bytes)}, under a tenth of the previous one, ${prev.name} (${bytes(prev.bytes)}). ` +
          "A fake complete full set (a lone manifest is enough) is this small; so is a SOURCE that lost its data or its include list. " +
          "Compare with SOURCE's backup logs and restore-test the newest backup; if SOURCE did not send it, treat its key as stolen: replace it (install-remote --key) and review what the key sent.",
      });
    // Once per flood: when the count first goes past the limit, not for every set after it.
    if (d.recent.length === FLOOD_FULLS + 1)
      this.anomalies.push({
        time,
        label,
        kind: "chain flood",
        path: dir,
        detail:
          `${d.recent.length} complete full backups arrived for ${dir} within 24 hours (the last: ${set.name}); SOURCE's duplicity makes one per run. ` +
          "Fake complete chains are how someone holding SOURCE's key makes prune --keep-full count the real ones as old. " +
          "Check SOURCE's backup logs for these runs; if SOURCE did not make them, treat its key as stolen: replace it (install-remote --key) and review what the key sent. " +
          "prune keeps everything younger than housekeeping.retentionDays meanwhile.",
      });
  }

  private burst(label: string, client: string, time: string, t: number): void {
    if (!Number.isFinite(t)) return;
    const id = `${label}\0${client}`;
    const b = this.bursts.get(id);
    if (b && t - b.end <= BURST_GAP_MS) {
      b.count++;
      b.end = t;
      b.endIso = time;
      return;
    }
    if (b) this.closeBurst(b);
    this.bursts.set(id, { start: time, end: t, endIso: time, count: 1, label, client });
  }

  private closeBurst(b: Burst): void {
    if (b.count >= BURST_COUNT)
      this.anomalies.push({ time: b.start, label: b.label, kind: "refusal burst", detail: `${b.count} refusals from ${b.client} between ${b.start} and ${b.endIso}` });
  }

  finish(files: Review["files"]): Review {
    for (const b of this.bursts.values()) this.closeBurst(b);
    for (const k of this.keys.values()) {
      const last = this.lastUpload.get(k.label);
      if (last === undefined) this.anomalies.push({ time: k.last, label: k.label, kind: "upload gap", detail: "no upload at all in the log" });
      else if (this.now - last > this.maxGapMs)
        this.anomalies.push({ time: new Date(last).toISOString(), label: k.label, kind: "upload gap", detail: `no upload for ${hours(this.now - last)}, until now` });
    }
    this.anomalies.sort((a, b) => a.time.localeCompare(b.time));
    return {
      files,
      since: this.since === undefined ? null : new Date(this.since).toISOString(),
      keys: [...this.keys.values()],
      days: [...this.days.values()].sort((a, b) => a.day.localeCompare(b.day) || a.label.localeCompare(b.label)),
      refusals: this.refusals,
      anomalies: this.anomalies,
    };
  }
}

function blockedDetail(file: string, start: string, takenBy: string): string {
  return (
    `${file} was refused: its start ${start} is taken by ${takenBy}. duplicity never makes two incrementals from one point, ` +
    `so unless an earlier run of SOURCE left ${takenBy}, someone else put it there, and every incremental SOURCE tries from ${start} is refused the same way. ` +
    `Make a full backup on SOURCE now (duplicity full …); if SOURCE did not upload ${takenBy}, treat its key as stolen: replace it (install-remote --key) and review what the key sent.`
  );
}

function hours(ms: number): string {
  return ms >= 2 * UNIT_MS.d! ? `${(ms / UNIT_MS.d!).toFixed(1)} days` : `${(ms / UNIT_MS.h!).toFixed(1)} hours`;
}

function chainSummary(r: VerifyResult): string {
  if (r.problems.length) return `BROKEN: ${r.problems.length} problem(s), run audit --verify`;
  return `intact${r.heads ? `, ${r.heads} recorded head(s) present` : ", no recorded head"}`;
}

/** Rows as aligned columns (each at most 60 wide, the last as long as it is). */
export function columns(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.min(60, Math.max(...rows.map((r) => (r[i] ?? "").length))));
  return rows.map((r) => "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "));
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function render(r: Review, deniedOnly: boolean): string {
  const out: string[] = [];
  for (const f of r.files) out.push(`audit log ${f.file}: ${f.lines} lines; chain ${f.chain}`);
  if (r.since) out.push(`since ${r.since}`);
  if (!deniedOnly) {
    out.push("", "Sessions per key");
    out.push(...columns([["KEY", "SESSIONS", "DENIED", "FILES", "BYTES", "LAST UPLOAD", "CLIENTS"], ...r.keys.map((k) => [k.label, String(k.sessions), String(k.denied), String(k.files), bytes(k.bytes), k.lastUpload ?? "never", k.clients.join(" ")])]));
    out.push("", "Uploads per day");
    out.push(...(r.days.length ? columns([["DAY", "KEY", "FILES", "BYTES"], ...r.days.map((d) => [d.day, d.label, String(d.files), bytes(d.bytes)])]) : ["  none"]));
  }
  out.push("", `Refusals (${r.refusals.length})`);
  out.push(...(r.refusals.length ? columns([["TIME", "KEY", "CLIENT", "CODE", "REASON"], ...r.refusals.map((x) => [x.time, x.label, x.client, x.code || x.event, x.what ? `${x.reason} [${x.what}]` : x.reason])]) : ["  none"]));
  if (!deniedOnly) {
    out.push("", `Anomalies (${r.anomalies.length})`);
    out.push(...(r.anomalies.length ? columns([["TIME", "KEY", "KIND", "DETAIL"], ...r.anomalies.map((a) => [a.time, a.label, a.kind, a.detail])]) : ["  none"]));
  }
  return out.join("\n");
}

async function review(o: Options): Promise<number> {
  const rv = new Reviewer(o.since, o.maxGapMs);
  const files: Review["files"] = [];
  for (const file of o.files) {
    const res = await verifyLog(file, o.head ?? defaultHeadFile(file), (_line, json) => json && rv.line(json));
    files.push({ file, lines: res.lines, chain: chainSummary(res) });
  }
  const r = rv.finish(files);
  if (o.json) {
    process.stdout.write(JSON.stringify(o.denied ? { files: r.files, since: r.since, refusals: r.refusals } : r, null, 2) + "\n");
  } else process.stdout.write(render(r, o.denied) + "\n");
  return 0;
}

async function verify(o: Options): Promise<number> {
  let bad = 0;
  for (const file of o.files) {
    const headFile = o.head ?? defaultHeadFile(file);
    const r = o.mode === "record-head" ? (await recordHead(file, headFile)).result : await verifyLog(file, headFile);
    process.stdout.write(`audit log ${file}: ${r.lines} lines, chain head ${r.head.slice(0, 16)}…, ${r.heads} recorded head(s) checked (${headFile})\n`);
    for (const n of r.notes) process.stdout.write(`  note: ${n}\n`);
    for (const p of r.problems) process.stdout.write(`  ${p.line ? `line ${p.line}: ` : ""}${p.what}\n`);
    if (o.mode === "record-head") process.stdout.write(`  recorded: line ${r.lines}, ${r.head}\n`);
    bad += r.problems.length;
  }
  process.stdout.write(bad ? `audit --verify: ${bad} problem(s)\n` : "audit --verify: OK\n");
  return bad ? 1 : 0;
}

export async function auditMain(args: string[]): Promise<number> {
  const o = parseArgs(args);
  if (typeof o === "string") {
    process.stderr.write(`validate-backup audit: ${o}\n${usageText("audit")}\n`);
    return 2;
  }
  try {
    return o.mode === "review" ? await review(o) : await verify(o);
  } catch (e) {
    process.stderr.write(`validate-backup audit: ${(e as Error).message}\n`);
    return 2;
  }
}
