// The review of the audit log as data (`validate-backup audit` prints it, render.ts; monitoring may
// read it): sessions per key, files and bytes per day, every refusal (refusals.ts says which lines
// are one), and what deserves a look: bursts of refusals, a client address never seen before for
// the key, lines flagged as anomalies (replaced files), no upload for longer than expected, and what
// someone holding SOURCE's key does to make root's prune or SOURCE's own backups work against them:
// a flood of complete full chains, a full backup far smaller than the one before, an incremental
// refused because a planted set took its start.
//
// One streaming pass, linear in lines, with memory bounded whatever the log holds: the latest
// LISTED_REFUSALS refusals and the first LISTED_ANOMALIES anomalies are kept, the rest counted by
// key and kind; client addresses are bounded in clients.ts; per-session and per-directory records
// are capped.
import { START_TAKEN } from "../profile/duplicity.js";
import { ROOT_CLIENT } from "./log.js";
import { refusalOf, type RefusalKind } from "./refusals.js";
import { Clients } from "./clients.js";
import { FullSetWatch } from "./fullsets.js";
import { duration } from "./units.js";
import { NOT_WRITTEN_BEFORE } from "./denials.js";

export { FLOOD_FULLS, FLOOD_WINDOW_MS, SMALL_FULL_RATIO } from "./fullsets.js";

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
/** A burst: at least BURST_COUNT refusals of one key, each within BURST_GAP of the previous. */
export const BURST_COUNT = 5;
export const BURST_GAP_MS = 10 * 60_000;
/** Refusals listed one by one (the latest); all of them are counted. */
export const LISTED_REFUSALS = 1000;
/** Anomalies listed one by one (the first); all of them are counted. */
export const LISTED_ANOMALIES = 1000;
/** Sessions whose logged refusals are counted until their session-end line. */
const OPEN_SESSIONS = 10_000;
/** Rows of the refusal summary (key, kind, code): a bound even for a log with made-up codes. */
const SUMMARY_ROWS = 1000;
/**
 * The kind of the refusals a session only counted (its session-end's `refused`), by the plan the
 * gate decided (its request line): SFTP and scp count theirs (sftp/server.ts, scp/side.ts). Any other
 * plan counts none today; should one, its refusals are "other", never another protocol's.
 */
const PLAN_KIND: Readonly<Record<string, RefusalKind>> = { sftp: "sftp", scp: "scp" };

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

export const DEFAULT_MAX_GAP_MS = 26 * UNIT_MS.h!;

export interface Refusal {
  time: string;
  label: string;
  client: string;
  event: string;
  /** What was refused: command, sftp, scp, rsync skip, rsync push, upload, error (refusals.ts). */
  kind: string;
  code: string;
  reason: string;
  what: string;
}

export type AnomalyKind =
  | "refusal burst"
  | "new client"
  | "new clients"
  | "flagged"
  | "upload gap"
  | "chain flood"
  | "small full backup"
  | "blocked incremental";

export interface Anomaly {
  time: string;
  label: string;
  kind: AnomalyKind;
  detail: string;
  /** The file or directory concerned, when there is one. */
  path?: string;
}

export interface KeyStats {
  label: string;
  sessions: number;
  /** Sessions whose command line was refused. */
  denied: number;
  /** Every refusal of the key (denied sessions, SFTP, scp, rsync, uploads, errors). */
  refused: number;
  files: number;
  bytes: number;
  /** The first client addresses within the window, and how many there were. */
  clients: string[];
  clientCount: number;
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
  clients: Set<string>;
}

export interface Review {
  files: { file: string; lines: number; chain: string }[];
  since: string | null;
  keys: KeyStats[];
  days: { day: string; label: string; files: number; bytes: number }[];
  /** Every refusal counted, also those past LISTED_REFUSALS and those sessions only counted (session-end). */
  refusalCount: number;
  /** Of refusalCount, those no line names: counted by the session, past its logging cap. */
  refusalsUnlogged: number;
  /** Per key, kind and code. */
  refusalSummary: { label: string; kind: string; code: string; count: number }[];
  /** The latest LISTED_REFUSALS, in log order. */
  refusals: Refusal[];
  anomalyCount: number;
  /** The first LISTED_ANOMALIES, by time. */
  anomalies: Anomaly[];
  /** Lines from client addresses past the review's bound (clients.ts), not judged as new or known. */
  untrackedClientLines: number;
}

const str = (v: unknown, dflt = "") => (typeof v === "string" ? v : v === undefined || v === null ? dflt : String(v));

export class Reviewer {
  private keys = new Map<string, KeyStats>();
  private days = new Map<string, { day: string; label: string; files: number; bytes: number }>();
  private clients = new Clients();
  private lastUpload = new Map<string, number>();
  private bursts = new Map<string, Burst>();
  private fulls = new FullSetWatch((a) => this.anomaly(a));
  /**
   * Session id -> refusals it logged one by one (its session-end counts them all), and the kind of
   * those it only counted: from its request line's plan, else (a log without it) its logged ones'.
   */
  private logged = new Map<string, { n: number; kind?: RefusalKind; planned?: boolean }>();
  private refusals: Refusal[] = [];
  private refusalCount = 0;
  private unlogged = 0;
  private summary = new Map<string, { label: string; kind: string; code: string; count: number }>();
  private anomalies: Anomaly[] = [];
  private anomalyCount = 0;

  constructor(
    private readonly since: number | undefined,
    private readonly maxGapMs: number,
    private readonly now = Date.now(),
  ) {}

  private key(label: string, time: string): KeyStats {
    let k = this.keys.get(label);
    if (!k) this.keys.set(label, (k = { label, sessions: 0, denied: 0, refused: 0, files: 0, bytes: 0, clients: [], clientCount: 0, first: time, last: time, lastUpload: null }));
    return k;
  }

  /** `always`: one per key at most (the end of the review), kept past the cap. */
  private anomaly(a: Anomaly, always = false): void {
    this.anomalyCount++;
    if (always || this.anomalies.length < LISTED_ANOMALIES) this.anomalies.push(a);
  }

  line(j: Record<string, unknown>): void {
    const time = str(j.time);
    const t = Date.parse(time);
    const label = str(j.label, "?");
    const client = str(j.client, "?");
    const event = str(j.event);
    const inWindow = this.since === undefined || (Number.isFinite(t) && t >= this.since);
    // What came before --since is the baseline: known clients, the last upload.
    // Root's housekeeping is no client of the key: it neither is a new one nor joins the key's list.
    if (client !== ROOT_CLIENT) {
      const fresh = this.clients.see(label, client, time, inWindow);
      if (fresh) this.anomaly({ time, label, kind: "new client", detail: fresh });
    }
    if (event === "publish" && Number.isFinite(t)) {
      const prev = this.lastUpload.get(label);
      if (inWindow && prev !== undefined && t - prev > this.maxGapMs)
        this.anomaly({ time, label, kind: "upload gap", detail: `no upload for ${duration(t - prev)} (since ${new Date(prev).toISOString()})` });
      this.lastUpload.set(label, t);
      this.fulls.publish(label, str(j.path), typeof j.size === "number" ? j.size : 0, t, time, inWindow);
    }
    // Before the window test: a session open across --since knows its protocol at its end, and the
    // refusals it wrote before the window are not taken for ones it only counted.
    const kind = refusalOf(j);
    if (event === "request" && j.decision === "allow" && typeof j.sid === "string" && typeof j.plan === "string")
      this.open(j.sid, { n: 0, kind: Object.hasOwn(PLAN_KIND, j.plan) ? PLAN_KIND[j.plan] : "other", planned: true });
    if (kind && event === "refused" && typeof j.sid === "string") this.countLogged(j.sid, kind);
    if (!inWindow) return;

    const k = this.key(label, time);
    k.last = time;
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
    // The key's first line after denied commands that were only counted (audit/denials.ts) brings their number.
    const unwritten = typeof j[NOT_WRITTEN_BEFORE] === "number" && j[NOT_WRITTEN_BEFORE] > 0 ? j[NOT_WRITTEN_BEFORE] : 0;
    if (unwritten && kind !== "command") {
      k.denied += unwritten;
      this.refused(k, { time, label, client, event, kind: "command", code: "UNLOGGED", reason: "", what: "" }, unwritten, t);
    }
    if (kind) {
      const n = 1 + (kind === "command" ? unwritten : 0);
      if (kind === "command") k.denied += n;
      const r: Refusal = { time, label, client, event, kind, code: str(j.code), reason: str(j.reason), what: str(j.command ?? j.path) };
      this.refused(k, r, n, t);
      this.refusals.push(r);
      // Keep the latest: halve when twice over, so the cost per line stays constant.
      if (this.refusals.length >= 2 * LISTED_REFUSALS) this.refusals = this.refusals.slice(-LISTED_REFUSALS);
    }
    if (event === "session-end" && typeof j.sid === "string") {
      // The session counted more refusals than it logged one by one (past its cap): they count too.
      const seen = this.logged.get(j.sid);
      const extra = (typeof j.refused === "number" ? j.refused : 0) - (seen?.n ?? 0);
      this.logged.delete(j.sid);
      if (extra > 0) {
        this.unlogged += extra;
        this.refused(k, { time, label, client, event, kind: seen?.kind ?? "other", code: "UNLOGGED", reason: "", what: "" }, extra, t);
      }
    }
    if (j.blocked === START_TAKEN) this.anomaly({ time, label, kind: "blocked incremental", path: str(j.path), detail: blockedDetail(str(j.path), str(j.start), str(j.takenBy)) });
    else if (j.anomaly === true) this.anomaly({ time, label, kind: "flagged", detail: [event, str(j.reason), str(j.path)].filter(Boolean).join(": ") });
  }

  private countLogged(sid: string, kind: RefusalKind): void {
    const s = this.logged.get(sid);
    if (s) {
      s.n++;
      if (!s.planned) s.kind = kind;
    } else this.open(sid, { n: 1, kind });
  }

  private open(sid: string, s: { n: number; kind?: RefusalKind; planned?: boolean }): void {
    this.logged.set(sid, s);
    // A session killed before its session-end line never comes back for its count.
    if (this.logged.size > OPEN_SESSIONS) this.logged.delete(this.logged.keys().next().value as string);
  }

  private refused(k: KeyStats, r: Refusal, n: number, t: number): void {
    k.refused += n;
    this.refusalCount += n;
    const id = `${r.label}\0${r.kind}\0${r.code}`;
    const row = this.summary.get(id) ?? (this.summary.size < SUMMARY_ROWS ? { label: r.label, kind: r.kind, code: r.code, count: 0 } : undefined);
    if (row) this.summary.set(id, row);
    const other = row ?? this.summary.get("\0other") ?? { label: "*", kind: "other", code: "", count: 0 };
    other.count += n;
    if (!row) this.summary.set("\0other", other);
    this.burst(r.label, r.client, r.time, t, n);
  }

  /** Refusals of one key close together, from whichever addresses: one anomaly per burst. */
  private burst(label: string, client: string, time: string, t: number, n: number): void {
    if (!Number.isFinite(t)) return;
    const b = this.bursts.get(label);
    if (b && t - b.end <= BURST_GAP_MS) {
      b.count += n;
      b.end = t;
      b.endIso = time;
      if (b.clients.size < 4) b.clients.add(client);
      return;
    }
    if (b) this.closeBurst(b);
    this.bursts.set(label, { start: time, end: t, endIso: time, count: n, label, clients: new Set([client]) });
  }

  private closeBurst(b: Burst, always = false): void {
    if (b.count < BURST_COUNT) return;
    const from = b.clients.size === 1 ? [...b.clients][0] : `${[...b.clients].slice(0, 3).join(", ")}${b.clients.size > 3 ? " and more" : ""}`;
    this.anomaly({ time: b.start, label: b.label, kind: "refusal burst", detail: `${b.count} refusals from ${from} between ${b.start} and ${b.endIso}` }, always);
  }

  finish(files: Review["files"]): Review {
    for (const b of this.bursts.values()) this.closeBurst(b, true);
    for (const u of this.clients.unnamed())
      this.anomaly({
        time: u.first,
        label: u.label,
        kind: "new clients",
        detail:
          `${u.count} more new client addresses between ${u.first} and ${u.last}, not named one by one. ` +
          "A key used from this many places is either shared or stolen: restrict it to SOURCE's address with from= in authorized_keys.",
      }, true);
    for (const k of this.keys.values()) {
      Object.assign(k, this.clients.listed(k.label));
      const last = this.lastUpload.get(k.label);
      if (last === undefined) this.anomaly({ time: k.last, label: k.label, kind: "upload gap", detail: "no upload at all in the log" }, true);
      else if (this.now - last > this.maxGapMs)
        this.anomaly({ time: new Date(last).toISOString(), label: k.label, kind: "upload gap", detail: `no upload for ${duration(this.now - last)}, until now` }, true);
    }
    this.anomalies.sort((a, b) => a.time.localeCompare(b.time));
    return {
      files,
      since: this.since === undefined ? null : new Date(this.since).toISOString(),
      keys: [...this.keys.values()],
      days: [...this.days.values()].sort((a, b) => a.day.localeCompare(b.day) || a.label.localeCompare(b.label)),
      refusalCount: this.refusalCount,
      refusalsUnlogged: this.unlogged,
      refusalSummary: [...this.summary.values()].sort((a, b) => b.count - a.count),
      refusals: this.refusals.slice(-LISTED_REFUSALS),
      anomalyCount: this.anomalyCount,
      anomalies: this.anomalies,
      untrackedClientLines: this.clients.untracked,
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
