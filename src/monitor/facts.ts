// What status, metrics and notify know of each key, from the records that already exist: the audit
// log (arrivals, refusals and anomalies through the review's own Reviewer; root's seal, prune and
// verify --stored lines), the arrivals record (state/arrivals.log), the tree itself (stored bytes
// and files) and the last hourly run's record (state/monitor/hourly.json).
//
// Bounded work: each audit log is read once, streaming, for all the keys that write to it; only the
// last 24 hours count for refusals and anomalies; the trees are walked by descriptor, never
// following a link, like seal's walk.
import fs from "node:fs";
import { Reviewer, type Anomaly } from "../audit/review.js";
import { readLines, prevOf, previousLog } from "../audit/chain.js";
import { ROOT_CLIENT } from "../audit/log.js";
import { loadConfig } from "../config/load.js";
import type { Policy } from "../config/schema.js";
import { toVbError } from "../handler.js";
import { at, closeQuietly, DIR_FLAGS } from "../fsat.js";
import { readArrivals, lastArrival, arrivalOverdue } from "../vault/arrivals.js";
import { IN_FLIGHT } from "../vault/quota.js";
import { walkDirs, lstatIn, openSubdir } from "../housekeeping/walk.js";
import { readStateRecord, writeRecord } from "./store.js";

export const HOUR = 3_600_000;
export const WINDOW_MS = 24 * HOUR;
/** The steps whose last run and status are reported, by the event of their audit line. */
export const STEPS = ["seal", "prune", "verify-stored"] as const;
export type Step = (typeof STEPS)[number];
/** hourly's exit statuses that are no failure: prune's warning (nothing arrived) is stale's own condition. */
export const NOT_FAILED = new Set([0, 5]);

export interface StepResult {
  at: string;
  ok: boolean;
  detail: string;
}

/** What `hourly` leaves in state/monitor after its steps: their exit statuses. */
export interface HourlyRecord {
  at: string;
  steps: { step: string; code: number }[];
}
export const HOURLY_RECORD = "hourly.json";

/** Anomalies of one kind within the window: how many, and the last one. */
export interface AnomalyTally {
  count: number;
  last: Anomaly;
}

export interface KeyFacts {
  config: string;
  label: string;
  /** Why nothing else could be learnt (the config or its places are unusable). */
  error?: string;
  /** An append-only key; a read-only (pull) key is never stale for lack of arrivals. */
  publishes: boolean;
  warnNoArrivalHours: number;
  lastArrival?: number;
  stale: boolean;
  stored?: { bytes: number; files: number; quotaUsed: number };
  quotaBytes?: number;
  steps: Partial<Record<Step, StepResult>>;
  hourly?: HourlyRecord;
  refusals: number;
  /** By condition name ("refusal burst", "flagged seal-skip", …), within the window. */
  anomalies: Map<string, AnomalyTally>;
  /** What failed, in words; empty when nothing did. */
  failing: string[];
  /** Of those, what could not be read (so the key could not be judged): notify tells it too. */
  unread?: string[];
}

export function anomalyCount(f: KeyFacts): number {
  let n = 0;
  for (const k of f.anomalies.values()) n += k.count;
  return n;
}

/**
 * The condition an anomaly belongs to, or undefined for those that are another condition's own:
 * the review's upload gap and prune's no-arrivals are staleness, a failed verify --stored is a step
 * that failed. Flagged lines go by their event, so a new kind of trouble is a new condition.
 */
function conditionOf(a: Anomaly): string | undefined {
  if (a.kind === "upload gap") return undefined;
  if (a.kind !== "flagged") return a.kind;
  const event = a.detail.split(":")[0]!;
  return event === "no-arrivals" || event === "verify-stored" ? undefined : `flagged ${event}`;
}

/** The label of a key whose config could not be read (no label the schema accepts is this one). */
const NO_LABEL = "?";

/** Whether the key's config could be read: only then is there anything else to say of it. */
export function configRead(f: KeyFacts): boolean {
  return f.label !== NO_LABEL;
}

/** A fact of the key that could not be gathered: it fails, and the key is not judged. */
function unread(f: KeyFacts, why: string): void {
  f.failing.push(why);
  (f.unread ??= []).push(why);
}

/** Whether everything there is to know of the key was gathered (its config, records, log and tree). */
export function judged(f: KeyFacts): boolean {
  return configRead(f) && !f.unread?.length;
}

function emptyFacts(config: string, label: string): KeyFacts {
  return { config, label, publishes: false, warnNoArrivalHours: 0, stale: false, steps: {}, refusals: 0, anomalies: new Map(), failing: [] };
}

/** One root step's audit line: when, and whether it went well. */
function stepResult(j: Record<string, unknown>, time: string): StepResult | undefined {
  if (j.dryRun === true) return undefined;
  const failed = typeof j.failed === "number" ? j.failed : 0;
  switch (j.event) {
    case "seal":
      return { at: time, ok: failed === 0, detail: failed ? `${failed} entries could not be sealed` : `${Number(j.files) || 0} files sealed` };
    case "prune":
      return { at: time, ok: failed === 0, detail: failed ? `${failed} entries failed` : `${Number(j.removedChains) || 0} chains removed` };
    case "verify-stored": {
      const n = ["changed", "missing", "unrecorded", "unreadable"].map((k) => Number(j[k]) || 0).reduce((a, b) => a + b, 0);
      return { at: time, ok: j.ok === true, detail: j.ok === true ? `${Number(j.matched) || 0} files match the log` : `${n} problem(s)` };
    }
  }
  return undefined;
}

/** Regular files and their apparent bytes below an open directory, never following a link. */
function countTree(fd: number, dev: number): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const d of walkDirs(fd, { dev }))
    for (const name of d.files) {
      const st = lstatIn(d.fd, name);
      if (st?.isFile()) {
        bytes += st.size;
        files++;
      }
    }
  return { bytes, files };
}

/** The same, leaving out (never entering) some top-level names. */
function countTreeExcept(fd: number, dev: number, skip: ReadonlySet<string>): { bytes: number; files: number } {
  const sum = { bytes: 0, files: 0 };
  for (const name of fs.readdirSync(at(fd))) {
    if (skip.has(name)) continue;
    const st = lstatIn(fd, name);
    if (st?.isFile()) {
      sum.bytes += st.size;
      sum.files++;
    } else if (st?.isDirectory()) {
      const sub = openSubdir(fd, [], name, { dev });
      if ("why" in sub) continue;
      try {
        const n = countTree(sub.fd, dev);
        sum.bytes += n.bytes;
        sum.files += n.files;
      } finally {
        closeQuietly(sub.fd);
      }
    }
  }
  return sum;
}

/** The tree's figures and the arrivals record: what the disk says of one key. */
function diskFacts(p: Policy, f: KeyFacts): void {
  const root = fs.openSync(p.root, DIR_FLAGS);
  try {
    const dev = fs.fstatSync(root).dev;
    const inRoot = countTree(root, dev);
    const state = fs.openSync(p.state, DIR_FLAGS);
    try {
      // What the quota counts: root and state, less the areas in flight (vault/quota.ts).
      const inState = countTreeExcept(state, dev, IN_FLIGHT);
      f.stored = { ...inRoot, quotaUsed: inRoot.bytes + inState.bytes };
      const last = lastArrival(readArrivals(state));
      if (last !== undefined) f.lastArrival = Math.max(f.lastArrival ?? 0, last);
    } finally {
      closeQuietly(state);
    }
  } finally {
    closeQuietly(root);
  }
}

/**
 * A key's facts as its own hourly run found them (notify saves them, metrics reuses them): each
 * key's run then reads its own log and walks its own tree, not every key's of the host.
 */
export const FACTS_RECORD = "facts.json";
/** How old a saved record may be to stand for the key: its hourly run plus the timer's spread. */
export const REUSE_MS = 90 * 60_000;

interface FactsRecord {
  at: number;
  config: string;
  facts: Pick<KeyFacts, "lastArrival" | "stored" | "steps" | "hourly" | "refusals" | "failing" | "unread"> & { anomalies: [string, AnomalyTally][] };
}

export function saveFacts(dirFd: number, f: KeyFacts, at: number): void {
  // What could not be read goes with the rest: facts reused later must not look judged.
  const { lastArrival, stored, steps, hourly, refusals, failing, unread } = f;
  writeRecord(dirFd, FACTS_RECORD, { at, config: f.config, facts: { lastArrival, stored, steps, hourly, refusals, failing, unread, anomalies: [...f.anomalies] } } satisfies FactsRecord);
}

/** The saved facts of a key, when recent enough at `now` and saved for this very config. */
function savedFacts(p: Policy, now: number): FactsRecord["facts"] | undefined {
  let rec: FactsRecord | undefined;
  try {
    rec = readStateRecord<FactsRecord>(p.state, FACTS_RECORD);
  } catch {
    return undefined; // a monitor directory that is not root's: the live gathering says so
  }
  if (!rec || rec.config !== p.configPath || !(now - rec.at >= 0 && now - rec.at <= REUSE_MS) || !Array.isArray(rec.facts?.anomalies)) return undefined;
  return rec.facts;
}

/**
 * Every key's facts at `now`, in the order of `configs`. `reuse`: a key's saved facts (FACTS_RECORD)
 * stand for it when recent; the others are gathered.
 */
export async function gather(configs: string[], now: number, reuse = false): Promise<KeyFacts[]> {
  const out: KeyFacts[] = [];
  const byLog = new Map<string, Map<string, KeyFacts>>();
  for (const config of configs) {
    let p: Policy;
    try {
      p = loadConfig(config);
    } catch (e) {
      const f = emptyFacts(config, NO_LABEL);
      f.error = toVbError(e).message;
      f.failing.push(`config unusable: ${f.error}`);
      out.push(f);
      continue;
    }
    const f = emptyFacts(config, p.label);
    f.publishes = p.access === "append-only";
    f.warnNoArrivalHours = p.housekeeping.warnNoArrivalHours;
    f.quotaBytes = p.limits.maxStoredBytes;
    const saved = reuse ? savedFacts(p, now) : undefined;
    if (saved) {
      Object.assign(f, saved, { anomalies: new Map(saved.anomalies) });
      f.stale = staleAt(f, now);
      out.push(f);
      continue;
    }
    try {
      f.hourly = readStateRecord<HourlyRecord>(p.state, HOURLY_RECORD);
    } catch (e) {
      unread(f, toVbError(e).message); // a monitor directory that is not root's
    }
    out.push(f);
    const keys = byLog.get(p.audit.file) ?? new Map<string, KeyFacts>();
    keys.set(p.label, f);
    byLog.set(p.audit.file, keys);
    try {
      diskFacts(p, f);
    } catch (e) {
      f.error = `${p.root} or ${p.state} cannot be read: ${toVbError(e).message}`;
      unread(f, f.error);
    }
  }
  for (const [file, keys] of byLog) await readLog(file, keys, now);
  for (const keys of byLog.values()) for (const f of keys.values()) judge(f, now);
  return out;
}

/** One pass over an audit log for the keys that write to it. */
async function readLog(file: string, keys: Map<string, KeyFacts>, now: number): Promise<void> {
  const rv = new Reviewer(now - WINDOW_MS, Number.MAX_SAFE_INTEGER, now);
  // The last rotated log first (audit --rotate, logrotate's LOG.1): the day may straddle a rotation.
  // previousLog, not LOG.1 itself: after a rotation killed mid-move LOG.1 may be the log under a
  // second name, which would count every line twice.
  const { rotated } = previousLog(file);
  const files = [...(fs.existsSync(rotated) ? [rotated] : []), file];
  try {
    for (const one of files)
      for await (const line of readLines(one)) {
        const { json } = prevOf(line.bytes);
        if (!json) continue;
        rv.line(json);
        const f = typeof json.label === "string" ? keys.get(json.label) : undefined;
        if (!f) continue;
        const time = typeof json.time === "string" ? json.time : "";
        if (json.event === "publish") {
          const t = Date.parse(time);
          if (Number.isFinite(t) && t <= now) f.lastArrival = Math.max(f.lastArrival ?? 0, t);
        }
        if (json.client === ROOT_CLIENT && (STEPS as readonly unknown[]).includes(json.event)) {
          const r = stepResult(json, time);
          if (r) f.steps[json.event as Step] = r;
        }
      }
  } catch (e) {
    const why = `audit log ${file} cannot be read: ${toVbError(e).message}`;
    for (const f of keys.values()) unread(f, why);
    return;
  }
  const r = rv.finish([]);
  // The review's own count: every refusal of the key in the window (its listed ones are capped).
  for (const k of r.keys) {
    const f = keys.get(k.label);
    if (f) f.refusals = k.refused;
  }
  for (const a of r.anomalies) {
    const f = keys.get(a.label);
    const c = conditionOf(a);
    if (!f || !c || Date.parse(a.time) < now - WINDOW_MS) continue;
    const k = f.anomalies.get(c);
    if (k) {
      k.count++;
      if (a.time >= k.last.time) k.last = a;
    } else f.anomalies.set(c, { count: 1, last: a });
  }
}

function staleAt(f: KeyFacts, now: number): boolean {
  return f.publishes && arrivalOverdue(f.lastArrival, now, f.warnNoArrivalHours);
}

function judge(f: KeyFacts, now: number): void {
  f.stale = staleAt(f, now);
  for (const s of STEPS) {
    const r = f.steps[s];
    if (r && !r.ok) f.failing.push(`${s} failed at ${r.at}: ${r.detail}`);
  }
  for (const s of f.hourly?.steps ?? []) {
    if (NOT_FAILED.has(s.code)) continue;
    const known = f.failing.some((x) => x.startsWith(`${s.step} failed`));
    if (!known) f.failing.push(`${s.step} failed in the hourly run at ${f.hourly!.at} (exit ${s.code})`);
  }
}
