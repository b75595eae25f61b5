// What the audit log says must be stored now: the log's events replayed in order, giving for each
// path the SHA-256 it was published with, and for each kept version (state/versions) the hash the
// replaced file had. `verify --stored` (stored.ts) takes entries out as it finds the files; what
// is left was recorded and is missing.
//
// Paths are kept as the log writes them: cleaned by cleanString (control and invisible characters
// as \xNN or \uNNNN, capped at 1024 characters), which is not reversible (a name may contain a
// literal "\x0a"). So the disk side is mapped into the same form, never the log back to bytes.
//
// Compact: the map grows with the number of files, so paths are grouped by directory (a directory
// name once, not once per file) and hashes are 32 bytes in one growing buffer, not hex strings.
import { DirIndex, chainsOf, namesOf, formatTime } from "../profile/duplicity.js";

const HASH_BYTES = 32;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export type Json = Record<string, unknown>;

/** Directory and name of a cleaned path ('' for the root's own directory). */
export function splitKey(key: string): [string, string] {
  const i = key.lastIndexOf("/");
  return i < 0 ? ["", key] : [key.slice(0, i), key.slice(i + 1)];
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

/** 32-byte slots in one buffer; a freed slot is used again. */
class HashStore {
  private buf = Buffer.alloc(HASH_BYTES * 1024);
  private used = 0;
  private free: number[] = [];

  put(hex: string): number {
    let slot = this.free.pop();
    if (slot === undefined) {
      if ((this.used + 1) * HASH_BYTES > this.buf.length) {
        const bigger = Buffer.alloc(this.buf.length * 2);
        this.buf.copy(bigger);
        this.buf = bigger;
      }
      slot = this.used++;
    }
    this.buf.write(hex, slot * HASH_BYTES, HASH_BYTES, "hex");
    return slot;
  }

  get(slot: number): string {
    return this.buf.toString("hex", slot * HASH_BYTES, (slot + 1) * HASH_BYTES);
  }

  release(slot: number): void {
    this.free.push(slot);
  }
}

export interface LedgerCounts {
  /** Lines of this key that changed the ledger. */
  applied: number;
  /** Lines of this key's file events whose fields could not be used (reported, never guessed). */
  unusable: number;
}

export class Ledger {
  private readonly hashes = new HashStore();
  /** dir -> name -> hash slot. */
  private readonly dirs = new Map<string, Map<string, number>>();
  /** path -> hash slot of version n at index n - 1. */
  private readonly versions = new Map<string, (number | undefined)[]>();
  private files = 0;
  readonly counts: LedgerCounts = { applied: 0, unusable: 0 };

  constructor(readonly label: string) {}

  get size(): number {
    return this.files;
  }

  get versionCount(): number {
    let n = 0;
    for (const list of this.versions.values()) n += list.filter((s) => s !== undefined).length;
    return n;
  }

  private slotOf(key: string): number | undefined {
    const [dir, name] = splitKey(key);
    return this.dirs.get(dir)?.get(name);
  }

  private set(key: string, slot: number | undefined): void {
    const [dir, name] = splitKey(key);
    let names = this.dirs.get(dir);
    const old = names?.get(name);
    if (old !== undefined) {
      this.hashes.release(old);
      this.files--;
    }
    if (slot === undefined) {
      if (names && old !== undefined) {
        names.delete(name);
        if (names.size === 0) this.dirs.delete(dir);
      }
      return;
    }
    if (!names) this.dirs.set(dir, (names = new Map()));
    names.set(name, slot);
    this.files++;
  }

  private dropVersions(key: string): void {
    for (const slot of this.versions.get(key) ?? []) if (slot !== undefined) this.hashes.release(slot);
    this.versions.delete(key);
  }

  /**
   * One audit line, in the log's order. Lines of other keys (a log shared by two keys), and the
   * events that store nothing, are ignored. Returns the paths the line touched.
   */
  apply(j: Json): string[] {
    if (j.label !== this.label) return [];
    const touched = this.event(j);
    if (touched === undefined) {
      this.counts.unusable++;
      return [];
    }
    if (touched.length) this.counts.applied++;
    return touched;
  }

  private event(j: Json): string[] | undefined {
    switch (j.event) {
      case "publish": {
        const path = str(j.path);
        const sha = typeof j.sha256 === "string" && SHA256_HEX.test(j.sha256) ? j.sha256 : undefined;
        if (!path || !sha) return undefined;
        // A publish over a recorded path follows its "replace" line, which kept the old hash.
        this.set(path, this.hashes.put(sha));
        return [path];
      }
      case "rename": {
        // Only a session's own files, link + unlink: the bytes keep their hash under the new name.
        const from = str(j.from);
        const to = str(j.to);
        if (!from || !to) return undefined;
        const slot = this.slotOf(from);
        const moved = slot === undefined ? undefined : this.hashes.put(this.hashes.get(slot));
        this.set(from, undefined);
        this.set(to, moved);
        return [from, to];
      }
      case "remove-own":
      case "remove-lock": {
        // A session's own file, or a restic lock (any session of the key may remove those).
        const path = str(j.path);
        if (!path) return undefined;
        this.set(path, undefined);
        return [path];
      }
      case "replace": {
        // Logged before the new bytes' "publish" (or "rename"): the current hash becomes version n.
        const path = str(j.path);
        const n = j.version;
        if (!path || typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 64) return undefined;
        const slot = this.slotOf(path);
        const list = this.versions.get(path) ?? [];
        const old = list[n - 1];
        if (old !== undefined) this.hashes.release(old);
        list[n - 1] = slot === undefined ? undefined : this.hashes.put(this.hashes.get(slot));
        this.versions.set(path, list);
        return [path];
      }
      case "prune-chain":
        return j.dryRun === true ? [] : this.pruneChain(j);
      default:
        return [];
    }
  }

  /**
   * prune logs a chain by its directory and its full set's time, not file by file: the chain is
   * found again among the recorded names of that directory, the way prune found it on disk.
   */
  private pruneChain(j: Json): string[] | undefined {
    const dir = str(j.dir);
    const full = str(j.full);
    if (!dir || !full) return undefined;
    const d = dir === "." ? "" : dir;
    const names = this.dirs.get(d);
    if (!names) return [];
    const chain = chainsOf(new DirIndex(names.keys())).chains.find((c) => formatTime(c.full.start) === full);
    const removed = chain ? chain.sets.flatMap(namesOf).map((n) => (d ? `${d}/${n}` : n)) : [];
    for (const key of removed) {
      this.set(key, undefined);
      this.dropVersions(key);
    }
    return removed;
  }

  /** Take the recorded hash of a stored file out of the ledger: undefined when none is recorded. */
  take(key: string): string | undefined {
    const slot = this.slotOf(key);
    if (slot === undefined) return undefined;
    const hex = this.hashes.get(slot);
    this.set(key, undefined);
    return hex;
  }

  /** The same for version n of `key`. */
  takeVersion(key: string, n: number): string | undefined {
    const list = this.versions.get(key);
    const slot = list?.[n - 1];
    if (slot === undefined) return undefined;
    const hex = this.hashes.get(slot);
    this.hashes.release(slot);
    list![n - 1] = undefined;
    if (list!.every((s) => s === undefined)) this.versions.delete(key);
    return hex;
  }

  /** What was recorded and never taken: the missing files, then the missing versions. */
  *left(): Generator<{ key: string; version?: number }> {
    for (const [dir, names] of this.dirs) for (const name of names.keys()) yield { key: dir ? `${dir}/${name}` : name };
    for (const [key, list] of this.versions) for (let i = 0; i < list.length; i++) if (list[i] !== undefined) yield { key, version: i + 1 };
  }
}
