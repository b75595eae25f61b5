// duplicity's backup sets as verify judges them: which files make a set, and what a set needs to be
// restorable and unmodified. Every volume is judged by the hash its (decrypted, signed) manifest
// lists, the last entry where a resumed backup listed it twice; every member must be signed within
// its set's time, so that a genuine file of another set cannot stand in under this set's name.
import path from "node:path";
import { parseName, formatTime, type DupName } from "../profile/duplicity.js";
import type { ManifestParser } from "./manifest.js";
import type { Status } from "./verdict.js";

export interface DupSet {
  dir: string;
  first: DupName;
  manifest?: string;
  sig?: string;
  vols: Map<number, string>;
  /** The manifest's volume list, once it was decrypted and found good. */
  listed?: ManifestParser;
  /** Why the manifest cannot be trusted, when it cannot. */
  untrusted?: string;
}

export interface Judge {
  problem(file: string, status: Status, detail: string): void;
  note(file: string, text: string): void;
  digest(file: string): string | undefined;
  /** Creation times of the good signatures on the file (seconds), when it was decrypted. */
  signedAt(file: string): number[];
}

export function setsOf(files: string[]): DupSet[] {
  const sets = new Map<string, DupSet>();
  for (const rel of files) {
    const dn = parseName(path.posix.basename(rel));
    if (!dn) continue;
    const dir = path.posix.dirname(rel);
    const key = `${dir}\0${dn.setKey}`;
    let set = sets.get(key);
    if (!set) sets.set(key, (set = { dir, first: dn, vols: new Map() }));
    if (dn.role === "manifest") set.manifest = rel;
    else if (dn.role === "sig") set.sig = rel;
    else set.vols.set(dn.vol, rel);
  }
  return [...sets.values()];
}

/** The backup time duplicity named the set by: a full set's start, an incremental's end. */
const timeOf = (s: DupSet) => (s.first.kind === "full" ? s.first.start : s.first.end);

export function memberName(set: DupSet, role: "manifest" | "sig" | number): string {
  const { kind, start, end } = set.first;
  const when = kind === "full" ? formatTime(start) : `${formatTime(start)}.to.${formatTime(end)}`;
  const gpg = [...set.vols.values(), set.manifest, set.sig].some((n) => n?.endsWith(".gpg")) ? ".gpg" : "";
  const name =
    role === "manifest"
      ? `duplicity-${kind}.${when}.manifest${gpg}`
      : role === "sig"
        ? `${kind === "full" ? "duplicity-full-signatures" : "duplicity-new-signatures"}.${when}.sigtar${gpg}`
        : `duplicity-${kind}.${when}.vol${role}.difftar${gpg}`;
  return set.dir === "." ? name : `${set.dir}/${name}`;
}

const iso = (t: number) => new Date(t * 1000).toISOString().replace(".000Z", "Z");

/** Members signed outside [this set's time, the next set's time): files of another backup run. */
function window(j: Judge, set: DupSet, all: DupSet[]): void {
  const from = timeOf(set);
  const later = all.filter((s) => s.dir === set.dir && timeOf(s) > from).map(timeOf);
  const until = later.length ? Math.min(...later) : Infinity;
  for (const file of [set.manifest, set.sig, ...set.vols.values()]) {
    if (!file) continue;
    for (const at of j.signedAt(file)) {
      // duplicity names a set by the second its run began; every file of the run is signed after.
      if (at < from || at >= until)
        j.problem(file, "MISPLACED", `signed at ${iso(at)}, outside its set's run (${iso(from)} to ${until === Infinity ? "now" : iso(until)}): a file of another backup under this set's name`);
    }
  }
}

/** Judge one set; returns its volumes whose bytes matched their manifest's hash. */
export function checkSet(j: Judge, set: DupSet, all: DupSet[]): string[] {
  const label = `${set.first.kind === "full" ? "full" : "incremental"} set ${memberName(set, "manifest").replace(/\.manifest(\.gpg)?$/, "")}`;
  if (!set.manifest) j.problem(memberName(set, "manifest"), "MISSING", `${label} has ${set.vols.size} volume(s) but no manifest: unfinished, or the manifest was removed`);
  if (!set.sig) j.problem(memberName(set, "sig"), "MISSING", `the signature file of the ${label}`);
  if (set.first.kind === "inc" && !all.some((s) => s !== set && s.dir === set.dir && timeOf(s) === set.first.start))
    j.problem(set.manifest ?? memberName(set, "manifest"), "MISSING", `no backup set ends at ${formatTime(set.first.start)}: the chain this incremental continues is missing`);
  window(j, set, all);
  const listed = set.listed;
  if (!listed) {
    const why = set.untrusted ?? "its set has no manifest";
    for (const file of set.vols.values()) j.problem(file, "UNVERIFIED", `not compared with a manifest: ${why}`);
    const max = Math.max(0, ...set.vols.keys());
    for (let n = 1; n <= max; n++) if (!set.vols.has(n)) j.problem(memberName(set, n), "MISSING", `volume ${n} of ${max} present`);
    return [];
  }
  let mismatched = 0;
  const matched: string[] = [];
  for (const [n, want] of listed.volumes) {
    const file = set.vols.get(n);
    if (!file) {
      j.problem(memberName(set, n), "MISSING", `volume ${n} is listed in the manifest`);
      continue;
    }
    const again = listed.repeated.has(n) ? " (listed again by a resumed backup: judged by the last entry)" : "";
    const got = j.digest(file);
    if (!want) j.problem(file, "UNVERIFIED", "the manifest lists no hash for this volume");
    else if (!want.algorithm) j.problem(file, "UNVERIFIED", `the manifest's hash ${want.named} is not one verify knows`);
    else if (got === undefined) j.problem(file, "UNVERIFIED", "not hashed (see its other problems)");
    else if (got !== want.hex) {
      mismatched++;
      j.problem(file, "HASH MISMATCH", `${want.named} ${got}, but the manifest says ${want.hex}${again}`);
    } else {
      matched.push(file);
      j.note(file, `${want.named} matches the manifest${again}`);
    }
  }
  for (const [n, file] of set.vols) if (!listed.volumes.has(n)) j.problem(file, "EXTRA", `volume ${n} is not listed in the manifest of its set`);
  if (mismatched && mismatched === listed.volumes.size)
    j.problem(set.manifest!, "HASH MISMATCH", `none of the ${mismatched} volume(s) it lists matches: a manifest of another set, or every volume replaced`);
  return matched;
}
