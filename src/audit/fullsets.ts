// What the review watches in the full sets of duplicity, from the publish lines: a flood of complete
// full chains within a day, and a full set far smaller than the one before it in its directory (what
// someone holding SOURCE's key does to make root's prune count the real chains as old).
import { parseName } from "../profile/duplicity.js";
import { bytes } from "./units.js";

/** An anomaly of the review (review.ts), of the two kinds watched here. */
export interface FullSetAnomaly {
  time: string;
  label: string;
  kind: "small full backup" | "chain flood";
  path: string;
  detail: string;
}

/** A chain flood: more than FLOOD_FULLS complete full sets arriving for one directory within FLOOD_WINDOW_MS. */
export const FLOOD_FULLS = 2;
export const FLOOD_WINDOW_MS = 24 * 3_600_000;
/** A full set smaller than the previous one divided by this is suspect. */
export const SMALL_FULL_RATIO = 10;
/** Unfinished full sets kept per directory: killed runs never send their manifest. */
const OPEN_SETS = 64;

/** What the review knows of the full sets of one directory of one key, from the publish lines. */
interface FullSets {
  /** Unfinished full sets: set key -> name -> size (a resumed volume's later size wins). */
  open: Map<string, Map<string, number>>;
  /** The last full set completed (its manifest published). */
  last?: { name: string; bytes: number };
  /** When full sets completed within the last FLOOD_WINDOW_MS. */
  recent: number[];
}

export class FullSetWatch {
  private dirs = new Map<string, FullSets>();

  constructor(private readonly report: (a: FullSetAnomaly) => void) {}

  /** A published file of a full set: when its manifest completes the set, judge the set's arrival and size. */
  publish(label: string, rel: string, size: number, t: number, time: string, inWindow: boolean): void {
    const slash = rel.lastIndexOf("/");
    const dir = slash < 0 ? "." : rel.slice(0, slash);
    const dn = parseName(rel.slice(slash + 1));
    if (!dn || dn.kind !== "full") return;
    const id = `${label}\0${dir}`;
    let d = this.dirs.get(id);
    if (!d) this.dirs.set(id, (d = { open: new Map(), recent: [] }));
    const sizes = d.open.get(dn.setKey) ?? new Map<string, number>();
    sizes.set(dn.name, size);
    d.open.set(dn.setKey, sizes);
    // Sets whose manifest never comes (killed runs) must not pile up.
    if (d.open.size > OPEN_SETS) d.open.delete(d.open.keys().next().value as string);
    if (dn.role !== "manifest") return;
    d.open.delete(dn.setKey);
    let total = 0;
    for (const b of sizes.values()) total += b;
    const set = { name: `${dir}/${dn.name.replace(/\.manifest(\.gpg)?$/, "")}`, bytes: total };
    const prev = d.last;
    d.last = set;
    d.recent = d.recent.filter((x) => t - x < FLOOD_WINDOW_MS);
    d.recent.push(t);
    if (!inWindow) return;
    if (prev && set.bytes * SMALL_FULL_RATIO < prev.bytes)
      this.report({
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
      this.report({
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
}
