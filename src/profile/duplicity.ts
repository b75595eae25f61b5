// duplicity's file names, and the rules that make them trustworthy. Pure: names in, verdicts out.
//
// A backup set is the unit duplicity writes in one run: a full set T (`duplicity-full.T.*` and
// `duplicity-full-signatures.T.*`) or an incremental set T1->T2 (`duplicity-inc.T1.to.T2.*` and
// `duplicity-new-signatures.T1.to.T2.*`). Volumes go up first, then the signatures, then the
// manifest: a set with its manifest stored is finished. A chain is a full set and the incrementals
// that continue it, each starting where the previous one ended.
//
// duplicity's own parser is liberal (any time string its date parser accepts, short names such as
// `df.<base36>.m`, any tail after the suffix). Every name it could take for a backup file must
// therefore either be exactly one we understand, or be refused: otherwise a stolen key could plant a
// set that duplicity believes in and our rules never saw.
import { VbError, existsError, type AuditFields } from "../errors.js";

export type SetKind = "full" | "inc";
export type Role = "vol" | "manifest" | "sig";

export interface DupName {
  readonly name: string;
  readonly kind: SetKind;
  readonly role: Role;
  /** Seconds since the epoch (UTC). For a full set start === end. */
  readonly start: number;
  readonly end: number;
  readonly vol: number; // 0 unless role === "vol"
  readonly suffix: "" | ".gz" | ".gpg";
  /** Identifies the set: "full:T" or "inc:T1:T2". */
  readonly setKey: string;
  /** Identifies the file inside its set, whatever its suffix: "vol:3", "manifest", "sig". */
  readonly memberKey: string;
}

/** How far ahead of our clock a name may be dated (SOURCE's clock may run a little fast). */
export const CLOCK_SKEW_SECONDS = 10 * 60;

const T = "(\\d{8}T\\d{6}Z)";
const VOL = "vol([1-9]\\d{0,8})";

// The exact names duplicity 0.8 writes (no --file-prefix, no --short-filenames, no --old-filenames).
// Manifests are encrypted or plain, never gzipped; volumes and signatures follow the compression too.
const CANONICAL: { re: RegExp; kind: SetKind; role: Role }[] = [
  { re: new RegExp(`^duplicity-full\\.${T}\\.${VOL}\\.difftar(\\.gpg|\\.gz)?$`), kind: "full", role: "vol" },
  { re: new RegExp(`^duplicity-full\\.${T}\\.manifest(\\.gpg)?$`), kind: "full", role: "manifest" },
  { re: new RegExp(`^duplicity-full-signatures\\.${T}\\.sigtar(\\.gpg|\\.gz)?$`), kind: "full", role: "sig" },
  { re: new RegExp(`^duplicity-inc\\.${T}\\.to\\.${T}\\.${VOL}\\.difftar(\\.gpg|\\.gz)?$`), kind: "inc", role: "vol" },
  { re: new RegExp(`^duplicity-inc\\.${T}\\.to\\.${T}\\.manifest(\\.gpg)?$`), kind: "inc", role: "manifest" },
  { re: new RegExp(`^duplicity-new-signatures\\.${T}\\.to\\.${T}\\.sigtar(\\.gpg|\\.gz)?$`), kind: "inc", role: "sig" },
];

// Shapes duplicity's parser also accepts (file_naming.py, short names), so never "other" files.
const SHORT_NAMES = [
  /^df\.[0-9a-z]+?\.[0-9a-z]+\.dt(\.p)?($|\.)/s,
  /^df\.[0-9a-z]+?\.m(\.p)?($|\.)/s,
  /^di\.[0-9a-z]+?\.[0-9a-z]+?\.[0-9a-z]+\.dt($|\.)/s,
  /^di\.[0-9a-z]+?\.[0-9a-z]+?\.m(\.p)?(\.|$)/s,
  /^dfs\.[0-9a-z]+?\.st(\.p)?(\.|$)/s,
  /^dns\.[0-9a-z]+?\.[0-9a-z]+?\.st(\.p)?(\.|$)/s,
];

/** True for every name duplicity might read as one of its files (a superset of what it writes). */
export function looksLikeDuplicity(name: string): boolean {
  return name.startsWith("duplicity-") || SHORT_NAMES.some((re) => re.test(name));
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** `20240131T235959Z` -> seconds, or NaN if it is not a real UTC date and time. */
export function parseTime(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return NaN;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  // Date.UTC rolls 31 February over into March (and reads years below 100 as 19xx): each field is
  // checked here instead, without the round trip through a string that made indexing a directory
  // of a million names take seconds more.
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  if (y < 100 || mo < 1 || mo > 12 || d < 1 || d > (mo === 2 && leap ? 29 : DAYS[mo - 1]!) || h > 23 || mi > 59 || se > 59) return NaN;
  return Date.UTC(y, mo - 1, d, h, mi, se) / 1000;
}

export function formatTime(sec: number): string {
  return new Date(sec * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** A canonical duplicity name, or null (for other names and for malformed dates alike). */
export function parseName(name: string): DupName | null {
  for (const { re, kind, role } of CANONICAL) {
    const m = re.exec(name);
    if (!m) continue;
    const groups = m.slice(1);
    const start = parseTime(groups[0]!);
    const end = kind === "inc" ? parseTime(groups[1]!) : start;
    if (Number.isNaN(start) || Number.isNaN(end)) return null;
    const vol = role === "vol" ? Number(groups[kind === "inc" ? 2 : 1]) : 0;
    const suffix = (groups.at(-1) ?? "") as DupName["suffix"];
    const setKey = kind === "full" ? `full:${start}` : `inc:${start}:${end}`;
    return { name, kind, role, start, end, vol, suffix, setKey, memberKey: role === "vol" ? `vol:${vol}` : role };
  }
  return null;
}

export type Verdict = { kind: "set"; dn: DupName } | { kind: "other" } | { kind: "foreign" };

/** "set": a file we understand; "other": not duplicity's at all; "foreign": duplicity could read it, we cannot. */
export function classify(name: string): Verdict {
  const dn = parseName(name);
  if (dn) return { kind: "set", dn };
  return looksLikeDuplicity(name) ? { kind: "foreign" } : { kind: "other" };
}

export interface BackupSet {
  readonly key: string;
  readonly kind: SetKind;
  readonly start: number;
  readonly end: number;
  /** memberKey -> the names stored for it (more than one only if planted behind our back). */
  readonly members: Map<string, string[]>;
  manifest: string | undefined;
  maxVol: number;
  readonly suffixes: Set<string>;
}

export function finished(set: BackupSet): boolean {
  return set.manifest !== undefined;
}

/** The duplicity view of one directory. */
export class DirIndex {
  readonly sets = new Map<string, BackupSet>();
  /** Start time -> keys of the incremental sets starting there. */
  readonly incsByStart = new Map<number, Set<string>>();
  readonly others: string[] = [];
  readonly foreign: string[] = [];

  constructor(names: Iterable<string> = []) {
    for (const n of names) this.add(n);
  }

  add(name: string): void {
    const v = classify(name);
    if (v.kind === "other") this.others.push(name);
    else if (v.kind === "foreign") this.foreign.push(name);
    else this.addSet(v.dn);
  }

  private addSet(dn: DupName): void {
    let set = this.sets.get(dn.setKey);
    if (!set) {
      set = { key: dn.setKey, kind: dn.kind, start: dn.start, end: dn.end, members: new Map(), manifest: undefined, maxVol: 0, suffixes: new Set() };
      this.sets.set(dn.setKey, set);
      if (dn.kind === "inc") {
        const keys = this.incsByStart.get(dn.start) ?? new Set<string>();
        keys.add(dn.setKey);
        this.incsByStart.set(dn.start, keys);
      }
    }
    const names = set.members.get(dn.memberKey) ?? [];
    names.push(dn.name);
    set.members.set(dn.memberKey, names);
    if (dn.role === "manifest") set.manifest ??= dn.name;
    if (dn.vol > set.maxVol) set.maxVol = dn.vol;
    if (dn.role !== "manifest") set.suffixes.add(dn.suffix);
  }

  /** True if a finished set ends at `time`: the only place an incremental may start. */
  finishedSetEndsAt(time: number): boolean {
    for (const set of this.sets.values()) if (set.end === time && finished(set)) return true;
    return false;
  }
}

/** Encrypted or not, every file of a set agrees; volumes and signatures share one suffix. */
function suffixClash(set: BackupSet, dn: DupName): string | undefined {
  const encrypted = dn.suffix === ".gpg";
  for (const s of set.suffixes) {
    if ((s === ".gpg") !== encrypted) return s || "no suffix";
    if (dn.role !== "manifest" && s !== dn.suffix) return s || "no suffix";
  }
  if (set.manifest && set.manifest.endsWith(".gpg") !== encrypted) return set.manifest.endsWith(".gpg") ? ".gpg" : "no suffix";
  return undefined;
}

interface NewNameRule {
  /** A reason, or undefined when the rule is satisfied. */
  check(dn: DupName, set: BackupSet | undefined, ix: DirIndex, now: number): string | undefined;
  /** Facts the refusal's audit line carries (see takenStart). */
  audit?(dn: DupName, ix: DirIndex): AuditFields;
}

/** The other incremental set that starts where `dn` does, if any. */
function takenStart(dn: DupName, ix: DirIndex): string | undefined {
  return [...(ix.incsByStart.get(dn.start) ?? [])].find((k) => k !== dn.setKey);
}

/** "inc:T1:T2" -> "duplicity-inc.T1.to.T2", as a person finds it in a listing. */
function setName(key: string): string {
  const [kind, a, b] = key.split(":");
  return kind === "full" ? `duplicity-full.${formatTime(Number(a))}` : `duplicity-inc.${formatTime(Number(a))}.to.${formatTime(Number(b))}`;
}

/**
 * What the audit line of a refused incremental whose start is taken carries. duplicity never
 * writes two incrementals from one point; one planted there (a single manifest is enough) blocks
 * every real incremental until SOURCE makes a new full backup: an anomaly, for the review.
 */
export const START_TAKEN = "incremental-start-taken";

// What a new file of a backup set must satisfy, in the order a person would want to hear about it.
const NEW_NAME_RULES: NewNameRule[] = [
  {
    check: (dn, _s, _ix, now) =>
      Math.max(dn.start, dn.end) > now + CLOCK_SKEW_SECONDS ? `is dated ${formatTime(dn.end)}, in the future (this server's clock says ${formatTime(Math.floor(now))})` : undefined,
  },
  { check: (dn) => (dn.kind === "inc" && dn.end <= dn.start ? "ends before it starts" : undefined) },
  {
    check: (dn, set) => {
      const stored = set?.members.get(dn.memberKey)?.find((n) => n !== dn.name);
      return stored ? `repeats '${stored}' of the same backup set under another suffix` : undefined;
    },
  },
  { check: (_dn, set) => (set && finished(set) ? `adds to a finished backup set (its manifest '${set.manifest}' is stored)` : undefined) },
  {
    check: (dn, set) => {
      const clash = set && suffixClash(set, dn);
      return clash ? `does not match the suffix of the other files of its backup set (${clash})` : undefined;
    },
  },
  {
    check: (dn, _s, ix) => (dn.kind === "inc" && takenStart(dn, ix) ? `starts at ${formatTime(dn.start)}, where another incremental set already starts` : undefined),
    audit: (dn, ix) => ({ anomaly: true, blocked: START_TAKEN, start: formatTime(dn.start), takenBy: setName(takenStart(dn, ix)!) }),
  },
  {
    check: (dn, _s, ix) =>
      dn.kind === "inc" && !ix.finishedSetEndsAt(dn.start) ? `starts at ${formatTime(dn.start)}, where no finished backup set ends` : undefined,
  },
];

function refuseName(display: string, why: string, audit?: AuditFields): never {
  throw new VbError("NOT_ALLOWED", `duplicity profile: '${display}' ${why}`, audit);
}

/** May `name` (not yet stored) be added to the directory indexed by `ix`? Throws NOT_ALLOWED if not. */
export function checkNew(ix: DirIndex, name: string, nowSec: number, display = name): DupName | undefined {
  const v = classify(name);
  if (v.kind === "other") return undefined;
  if (v.kind === "foreign") refuseName(display, "looks like a duplicity file but is not a name duplicity 0.8 writes (short, prefixed or old-style names are refused)");
  const set = ix.sets.get(v.dn.setKey);
  for (const rule of NEW_NAME_RULES) {
    const why = rule.check(v.dn, set, ix, nowSec);
    if (why) refuseName(display, why, rule.audit?.(v.dn, ix));
  }
  return v.dn;
}

/**
 * May the stored file `name` be replaced (duplicity resuming)? Only the highest volume and the
 * signature file of an unfinished set: what a resumed run re-uploads. Throws EXISTS if not.
 */
export function checkReplace(ix: DirIndex, name: string, display = name): DupName {
  const no = (why: string): never => {
    throw existsError(display, why);
  };
  const dn = parseName(name);
  if (!dn) return no("not a file of a duplicity backup set");
  const set = ix.sets.get(dn.setKey);
  if (!set) return no("not stored");
  if (finished(set)) return no(`its backup set is finished: '${set.manifest}' is stored`);
  if (dn.role === "vol" && dn.vol !== set.maxVol) return no(`only the last volume of an unfinished set, vol${set.maxVol}, may be sent again`);
  if ((set.members.get(dn.memberKey)?.length ?? 0) > 1) return no("it is stored under more than one suffix");
  return dn;
}

/**
 * With `pull: "metadata"`: what an incremental needs when its local cache is lost (manifests and
 * signatures), and volume 1 of an unfinished set, which a resumed run reads back to check its
 * passphrase. Never a volume of a finished set.
 */
export function isMetadataRead(ix: DirIndex | undefined, name: string): boolean {
  const dn = parseName(name);
  if (!dn) return false;
  if (dn.role !== "vol") return true;
  const set = ix?.sets.get(dn.setKey);
  return dn.vol === 1 && set !== undefined && !finished(set);
}

export interface Chain {
  /** The full set that starts the chain. */
  readonly full: BackupSet;
  /** Every set of the chain, the full set first. */
  readonly sets: BackupSet[];
}

/**
 * Chains of one directory: each full set with the incrementals reachable from it (end -> start).
 * Incremental sets no full set leads to are orphans, returned apart.
 */
export function chainsOf(ix: DirIndex): { chains: Chain[]; orphans: BackupSet[] } {
  const chains: Chain[] = [];
  const reached = new Set<string>();
  for (const full of ix.sets.values()) {
    if (full.kind !== "full") continue;
    const sets = [full];
    reached.add(full.key);
    for (let i = 0; i < sets.length; i++) {
      for (const key of ix.incsByStart.get(sets[i]!.end) ?? []) {
        if (reached.has(key)) continue;
        reached.add(key);
        sets.push(ix.sets.get(key)!);
      }
    }
    chains.push({ full, sets });
  }
  const orphans = [...ix.sets.values()].filter((s) => !reached.has(s.key));
  return { chains, orphans };
}

/** Every stored name of a set. */
export function namesOf(set: BackupSet): string[] {
  return [...set.members.values()].flat();
}
