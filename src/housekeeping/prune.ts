// `validate-backup prune --config F [--keep-full N] [--older-than DURATION] [--dry-run]` (root): the
// house-cleaning SOURCE may no longer do. It removes whole duplicity chains (the full set, its
// incrementals, their signatures and manifests, and their kept versions) and nothing else.
//
// Chains are ordered by when they arrived here (state/arrivals.log, our clock), never by the dates
// in their names, which whoever holds the key chose. A chain with no arrival record for its full
// set was not uploaded through the gatekeeper: it is listed and left alone, and never counts as a
// newer chain. The newest chain, and any chain an unfinished set builds on, always stay. Given
// both --keep-full and --older-than, a chain goes only when both allow it. Given neither, N is the
// config's housekeeping.keepFull, so root's schedule and an edit of the config never disagree.
//
// The retention floor (housekeeping.retentionDays, from the config only: no option lowers it) is
// the last word: a chain stays while any file it would remove arrived, or any version of its files
// was kept, less than that long ago. Whoever holds SOURCE's key can make every real chain look old
// by uploading newer fake ones (one manifest makes a "complete" set); the floor is the time they
// must then stay unnoticed before prune removes anything real. A file prune would remove that has
// no arrival record counts as arrived now: unknown is young, so a lost record never lets a file go.
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import { VbError, errnoText } from "../errors.js";
import { DirIndex, chainsOf, finished, namesOf, formatTime, looksLikeDuplicity, type Chain } from "../profile/duplicity.js";
import { inodeKey, closeQuietly } from "../fsat.js";
import { VERSIONS_DIR, versionKey } from "../vault/versions.js";
import { readArrivals, lastArrival, compactArrivals, arrivalOverdue, ARRIVALS_FILE, type ArrivalMap } from "../vault/arrivals.js";
import { walkDirs, lstatIn, unlinkIfSame, removeTreeAt, openSubdir, notPlain, type Dir } from "./walk.js";
import { open, parseArgs, parseDuration, nowFrom, requireRoot, main, EXIT, type Housekeeping } from "./context.js";
import { say, visible } from "../audit/sanitize.js";
import { ago, duration } from "../audit/units.js";
import { usageFault } from "../usage.js";

const LOGGER = "/usr/bin/logger";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface PruneRules {
  keepFull?: number;
  olderThanMs?: number;
}

export interface ChainVerdict {
  dir: string;
  /** The full set's time, as in its names (for people; decisions never use it). */
  full: string;
  files: number;
  first?: number;
  last?: number;
  remove: boolean;
  why: string;
}

export interface PruneReport {
  chains: ChainVerdict[];
  removedFiles: number;
  removedVersions: number;
  /** Files that belong to no chain we may judge: other files, orphan incrementals, foreign names. */
  leftAlone: { path: string; why: string }[];
  lastArrival?: number;
  warning?: string;
  /** The retention floor: nothing that arrived (or was kept as a version) after this is removed. */
  floor: { days: number; since: number };
  /** Entries an error kept from being judged or removed (they are among `leftAlone`). */
  failed: number;
}

interface Facts {
  chain: Chain;
  first?: number; // earliest arrival of the full set's files
  last?: number; // latest arrival of any file of the chain
  complete: boolean;
  unfinished: boolean;
  /** A file prune would remove that has no arrival record (treated as arrived now). */
  unrecorded?: string;
  /** The names prune would remove. */
  names: string[];
}

interface DirContext {
  rules: PruneRules;
  now: number;
  newest?: Facts;
  /** Arrival times (first) of the complete, dated chains, ascending. */
  completeFirsts: number[];
  /** Files that arrived, or versions kept, after this stay (the retention floor). */
  floor: number;
  retentionDays: number;
  /** When a version of `name` was last kept (its area's ctime, which only moves forward), if any. */
  versionKeptAt(name: string): number | undefined;
}

/** How many values of the ascending `xs` are greater than x. */
function countAbove(xs: number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return xs.length - lo;
}

// Why a chain stays, in order; a chain no rule keeps is removed.
const KEEP: ((f: Facts, x: DirContext) => string | undefined)[] = [
  (f) => (f.first === undefined ? "no arrival record for its full set (not uploaded through the gatekeeper?)" : undefined),
  (f) => (f.unfinished ? "an unfinished backup set builds on it" : undefined),
  (f, x) => (f === x.newest ? "the newest chain" : undefined),
  (f, x) => {
    if (x.rules.keepFull === undefined) return undefined;
    const newer = countAbove(x.completeFirsts, f.last!);
    return newer < x.rules.keepFull ? `${newer} complete chain(s) arrived after it (--keep-full ${x.rules.keepFull})` : undefined;
  },
  (f, x) =>
    x.rules.olderThanMs !== undefined && f.last! > x.now - x.rules.olderThanMs ? `its last file arrived ${ago(x.now - f.last!, "whole")} (--older-than)` : undefined,
  // The retention floor, whatever the rules above decided.
  (f, x) => {
    const floor = `within the retention floor (housekeeping.retentionDays ${x.retentionDays})`;
    if (f.unrecorded) return `${f.unrecorded} has no arrival record: counted as arrived now, ${floor}`;
    if (f.last! > x.floor) return `its last file arrived ${ago(x.now - f.last!, "whole")}, ${floor}`;
    for (const n of f.names) {
      const kept = x.versionKeptAt(n);
      if (kept !== undefined && kept > x.floor) return `a version of ${n} was kept ${ago(x.now - kept, "whole")}, ${floor}`;
    }
    return undefined;
  },
];

class Pruner {
  readonly report: PruneReport;
  private readonly arrivals: ArrivalMap;
  readonly removed = new Set<string>();
  readonly walkedDirs = new Set<string>();
  readonly seen = new Set<string>();
  private versionsFd: number | undefined;
  private readonly retentionDays: number;

  constructor(
    private readonly h: Housekeeping,
    private readonly rules: PruneRules,
    private readonly now: number,
    private readonly dryRun: boolean,
  ) {
    this.retentionDays = h.policy.housekeeping.retentionDays;
    this.report = { chains: [], removedFiles: 0, removedVersions: 0, leftAlone: [], failed: 0, floor: { days: this.retentionDays, since: now - this.retentionDays * DAY } };
    this.arrivals = readArrivals(h.stateFd);
    this.report.lastArrival = lastArrival(this.arrivals);
    const v = openSubdir(h.stateFd, [], VERSIONS_DIR, h.walk);
    if (!("why" in v)) this.versionsFd = v.fd;
  }

  close(): void {
    closeQuietly(this.versionsFd);
  }

  private leave(path: string, why: string): void {
    this.report.leftAlone.push({ path, why });
  }

  private kind(d: Dir, name: string): string {
    const st = lstatIn(d.fd, name);
    if (!st) return "vanished";
    return st.isDirectory() ? "directory" : (notPlain(st, this.h.walk.dev) ?? "not a regular file");
  }

  /** An error on one entry (EIO, EPERM) does not stop the others: left alone, and the run exits 4. */
  fail(path: string, e: unknown): void {
    this.report.failed++;
    this.leave(path, `failed: ${errnoText(e)}`);
  }

  dir(d: Dir): void {
    const dirRel = d.comps.join("/");
    const relOf = (name: string) => (dirRel ? `${dirRel}/${name}` : name);
    this.walkedDirs.add(dirRel);
    for (const n of d.names) this.seen.add(relOf(n));
    // Regular files only: a directory named like a chain's file is no member (unlinking it failed
    // with EISDIR and stopped every later run); it is reported and left alone.
    const ix = new DirIndex(d.files);
    const files = new Set(d.files);
    for (const n of d.names) if (!files.has(n) && looksLikeDuplicity(n)) this.leave(relOf(n), `${this.kind(d, n)}, named like a duplicity file: never part of a chain`);
    for (const n of ix.others) this.leave(relOf(n), "not a duplicity file");
    for (const n of ix.foreign) this.leave(relOf(n), "duplicity-like name that duplicity 0.8 does not write");
    const { chains, orphans } = chainsOf(ix);
    for (const o of orphans) for (const n of namesOf(o)) this.leave(relOf(n), "incremental set that continues no full set here");
    if (!chains.length) return;

    const stats = new Map<string, fs.Stats>();
    const arrival = (name: string): number | undefined => {
      const st = lstatIn(d.fd, name);
      if (!st) return undefined;
      stats.set(name, st);
      const a = this.arrivals.get(relOf(name));
      return a && a.i === inodeKey(st) ? a.t : undefined;
    };
    const facts: Facts[] = chains.map((chain) => {
      let first: number | undefined;
      let last: number | undefined;
      let unrecorded: string | undefined;
      for (const set of chain.sets)
        for (const n of namesOf(set)) {
          const t = arrival(n);
          if (t === undefined) {
            // Only a file prune would remove needs a record; links and the like are left anyway.
            const st = stats.get(n);
            if (st && !notPlain(st, this.h.walk.dev)) unrecorded ??= relOf(n);
            continue;
          }
          if (set === chain.full && (first === undefined || t < first)) first = t;
          if (last === undefined || t > last) last = t;
        }
      return { chain, first, last, unrecorded, names: chain.sets.flatMap(namesOf), complete: finished(chain.full), unfinished: chain.sets.some((s) => !finished(s)) };
    });
    const dated = facts.filter((f) => f.first !== undefined);
    const x: DirContext = {
      rules: this.rules,
      now: this.now,
      newest: dated.reduce<Facts | undefined>((a, f) => (!a || f.first! > a.first! ? f : a), undefined),
      completeFirsts: dated
        .filter((f) => f.complete)
        .map((f) => f.first!)
        .sort((a, b) => a - b),
      floor: this.report.floor.since,
      retentionDays: this.retentionDays,
      versionKeptAt: (n) => {
        const st = this.versionsFd === undefined ? null : lstatIn(this.versionsFd, versionKey(relOf(n)));
        return st ? st.ctimeMs : undefined;
      },
    };
    for (const f of facts) {
      let keep: string | undefined;
      for (const rule of KEEP) if ((keep = rule(f, x))) break;
      this.report.chains.push({ dir: dirRel || ".", full: formatTime(f.chain.full.start), files: f.names.length, first: f.first, last: f.last, remove: !keep, why: keep ?? "removable" });
      if (!keep) this.removeChain(d, f.names, stats, relOf);
    }
  }

  private removeChain(d: Dir, names: string[], stats: Map<string, fs.Stats>, relOf: (n: string) => string): void {
    for (const name of names) {
      const st = stats.get(name);
      const why = st ? notPlain(st, this.h.walk.dev) : "vanished";
      if (why) {
        this.leave(relOf(name), why);
        continue;
      }
      let gone: boolean;
      try {
        gone = this.dryRun || unlinkIfSame(d.fd, name, st!);
      } catch (e) {
        this.fail(relOf(name), e);
        continue;
      }
      if (!gone) {
        this.leave(relOf(name), "changed while being removed");
        continue;
      }
      this.removed.add(relOf(name));
      this.report.removedFiles++;
      if (this.versionsFd !== undefined && lstatIn(this.versionsFd, versionKey(relOf(name)))) {
        try {
          if (!this.dryRun) removeTreeAt(this.versionsFd, versionKey(relOf(name)), this.h.walk, [VERSIONS_DIR]);
          this.report.removedVersions++;
        } catch (e) {
          this.fail(`state:${VERSIONS_DIR}/${versionKey(relOf(name))}`, e);
        }
      }
    }
  }

  /**
   * Drop the records of removed files, and of files gone from a directory we walked. Every run, not
   * only one that removed something: renames and re-sent names grow the record between runs.
   */
  compact(walkStart: number): void {
    if (this.dryRun) return;
    try {
      compactArrivals(this.h.stateFd, this.h.locksFd, (a) => {
        if (this.removed.has(a.p)) return false;
        const dir = a.p.includes("/") ? a.p.slice(0, a.p.lastIndexOf("/")) : "";
        return this.seen.has(a.p) || !this.walkedDirs.has(dir) || a.t >= walkStart;
      });
    } catch (e) {
      // A failure like any other entry's: the chains already removed are still reported and audited.
      this.report.failed++;
      this.leave(`state:${ARRIVALS_FILE}`, `failed: ${e instanceof VbError ? e.message : errnoText(e)}`);
    }
  }
}

export function prune(h: Housekeeping, rules: PruneRules, opts: { now?: number; dryRun?: boolean } = {}): PruneReport {
  if (rules.keepFull === undefined && rules.olderThanMs === undefined) throw new VbError("BAD_REQUEST", "say what to keep: --keep-full N and/or --older-than DURATION");
  const now = opts.now ?? Date.now();
  const p = new Pruner(h, rules, now, opts.dryRun ?? false);
  try {
    const onSkip = (comps: readonly string[], name: string, why: string) => p.report.leftAlone.push({ path: [...comps, name].join("/"), why });
    if (h.policy.profile === "duplicity")
      for (const d of walkDirs(h.rootFd, { ...h.walk, onSkip })) {
        try {
          p.dir(d);
        } catch (e) {
          p.fail(d.comps.join("/") || ".", e);
        }
      }
    p.compact(now);
  } finally {
    p.close();
  }
  const last = p.report.lastArrival;
  if (last === undefined) p.report.warning = "no arrival was ever recorded for this key";
  else if (arrivalOverdue(last, now, h.policy.housekeeping.warnNoArrivalHours)) p.report.warning = `nothing arrived for ${duration(now - last, "whole")} (last arrival ${new Date(last).toISOString()})`;
  return p.report;
}

/** The warning goes to syslog too: whoever reads the audit log may not be looking. */
function syslog(label: string, message: string): void {
  spawnSync(LOGGER, ["-t", "validate-backup", "-p", "user.warning", "--", `[${label}] ${message}`], { env: {}, stdio: "ignore", timeout: 5000, shell: false });
}

export function describe(r: PruneReport, dryRun: boolean): string {
  const out = [`retention floor: nothing that arrived after ${new Date(r.floor.since).toISOString()} is removed (housekeeping.retentionDays ${r.floor.days})`];
  out.push(...r.chains.map((c) => `${c.remove ? (dryRun ? "would remove" : "removed") : "kept"} ${visible(c.dir)}/duplicity-full.${c.full}… (${c.files} files): ${visible(c.why)}`));
  out.push(`${dryRun ? "would remove" : "removed"} ${r.removedFiles} files and ${r.removedVersions} version areas`);
  if (r.leftAlone.length) out.push(`left alone (${r.leftAlone.length}):`, ...r.leftAlone.slice(0, 50).map((l) => `  ${visible(l.path)}: ${visible(l.why)}`));
  if (r.leftAlone.length > 50) out.push(`  … and ${r.leftAlone.length - 50} more`);
  if (r.warning) out.push(`WARNING: ${r.warning}`);
  return out.join("\n");
}

/** The options' rules; with neither --keep-full nor --older-than, the config's housekeeping.keepFull. */
function rulesFrom(o: Map<string, string>, configKeepFull: () => number): PruneRules {
  const rules: PruneRules = {};
  const k = o.get("--keep-full");
  if (k !== undefined) {
    if (!/^[1-9]\d{0,4}$/.test(k)) throw new VbError("BAD_REQUEST", `--keep-full needs a whole number of at least 1 (got '${k.slice(0, 16)}')`);
    rules.keepFull = Number(k);
  }
  const d = o.get("--older-than");
  if (d !== undefined) rules.olderThanMs = parseDuration(d);
  if (k === undefined && d === undefined) rules.keepFull = configKeepFull();
  return rules;
}

export async function pruneMain(args: string[]): Promise<number> {
  return main("prune", () => {
    const o = parseArgs(args, { "--config": "value", "--keep-full": "value", "--older-than": "value", "--dry-run": "flag", "--now": "value" }, "prune");
    const config = o.get("--config");
    if (!config) throw usageFault("prune", "--config is required");
    rulesFrom(o, () => 1); // a bad option is a usage error before anything is opened
    const now = nowFrom(o);
    requireRoot("prune");
    const h = open(config, "prune");
    try {
      const rules = rulesFrom(o, () => h.policy.housekeeping.keepFull);
      const dryRun = o.has("--dry-run");
      const r = prune(h, rules, { dryRun, now });
      for (const c of r.chains.filter((c) => c.remove)) h.audit.event("prune-chain", { dryRun, dir: c.dir, full: c.full, files: c.files });
      h.audit.event("prune", {
        dryRun,
        keepFull: rules.keepFull ?? null,
        olderThanMs: rules.olderThanMs ?? null,
        retentionDays: h.policy.housekeeping.retentionDays,
        ...(now === undefined ? {} : { now: new Date(now).toISOString() }),
        chains: r.chains.length,
        removedChains: r.chains.filter((c) => c.remove).length,
        removedFiles: r.removedFiles,
        removedVersions: r.removedVersions,
        leftAlone: r.leftAlone.length,
        failed: r.failed,
      });
      say(describe(r, dryRun));
      if (r.warning) {
        h.audit.event("no-arrivals", { anomaly: true, reason: r.warning, lastArrival: r.lastArrival ?? null });
        syslog(h.policy.label, r.warning);
        process.stderr.write(`validate-backup prune: WARNING: ${r.warning}\n`);
      }
      if (r.failed) {
        // Named here too: among many entries left alone, the report above lists only the first 50.
        const failed = r.leftAlone.filter((l) => l.why.startsWith("failed: "));
        const lines = failed.slice(0, 20).map((l) => `  ${visible(l.path)}: ${visible(l.why)}\n`);
        if (failed.length > 20) lines.push(`  … and ${failed.length - 20} more\n`);
        process.stderr.write(`validate-backup prune: ${r.failed} entries failed; the rest was done:\n${lines.join("")}`);
      }
      return r.failed ? EXIT.failed : r.warning ? EXIT.warning : EXIT.ok;
    } finally {
      h.close();
    }
  });
}
