// `validate-backup seal --config F [--dry-run]` (root, from a timer): what has settled in the backup
// tree becomes root's, so that even a flaw in the gatekeeper cannot delete or change it.
// Directories become root:GROUP 1770 (the backup user may still add, the sticky bit keeps it from
// removing what is not its own), files root:GROUP 0440. Files of an unfinished duplicity set and
// files younger than housekeeping.minAgeMinutes stay the backup user's until a later run, so an
// interrupted backup can still resume. restic's lock files stay the key's, so that any session of
// the key can still remove a killed run's lock (profile/restic.ts; in a sealed, sticky locks/ a
// root-owned lock could never go). Abandoned temporary and staging areas in `state` are swept.
import fs from "node:fs";
import { DirIndex, parseName, finished } from "../profile/duplicity.js";
import { pidAlive } from "../lock.js";
import { errnoText } from "../errors.js";
import { walkDirs, openPlainFile, openSubdir, lstatIn, removeTreeAt, notPlain, type Dir } from "./walk.js";
import { open, parseArgs, requireRoot, main, sealGroup, EXIT, type Housekeeping } from "./context.js";
import { at, closeQuietly } from "../fsat.js";
import { say, visible } from "../audit/sanitize.js";
import { usageFault } from "../usage.js";
import { LOCKS_DIR } from "../profile/restic.js";
import { whyNotLockAt } from "../vault/locks.js";

export const SEALED_DIR_MODE = 0o1770;
export const SEALED_FILE_MODE = 0o440;
/** Areas of `state` where each session keeps a <pid>-<random> directory while it runs. */
const SESSION_AREAS = ["tmp", "staging"] as const;
const MAX_AUDITED_ODDITIES = 1000;

export interface SealReport {
  dirs: number;
  files: number;
  alreadySealed: number;
  young: number;
  unfinished: number;
  /** restic lock files, left as they are. */
  locks: number;
  odd: { path: string; why: string }[];
  swept: number;
  /** Entries an error kept from being sealed (they are among `odd`): the run exits 4. */
  failed: number;
}

function isSealed(st: fs.Stats, gid: number, mode: number): boolean {
  return st.uid === 0 && st.gid === gid && (st.mode & 0o7777) === mode;
}

function rel(comps: readonly string[], name?: string): string {
  return [...comps, ...(name === undefined ? [] : [name])].join("/") || ".";
}

class Sealer {
  readonly report: SealReport = { dirs: 0, files: 0, alreadySealed: 0, young: 0, unfinished: 0, locks: 0, odd: [], swept: 0, failed: 0 };
  private readonly gid: number;
  private readonly minAgeMs: number;

  constructor(
    private readonly h: Housekeeping,
    private readonly now: number,
    private readonly dryRun: boolean,
  ) {
    this.gid = sealGroup(h);
    this.minAgeMs = h.policy.housekeeping.minAgeMinutes * 60_000;
  }

  odd(path: string, why: string): void {
    this.report.odd.push({ path, why });
    if (this.report.odd.length <= MAX_AUDITED_ODDITIES) this.h.audit.event("seal-skip", { anomaly: true, path, reason: why });
  }

  /** One entry that cannot be sealed (EIO, EPERM) does not stop the others: reported, and the run fails at the end. */
  failure(path: string, e: unknown): void {
    this.report.failed++;
    this.odd(path, `not sealed: ${errnoText(e)}`);
  }

  dir(d: Dir): void {
    // A setgid bit (install-remote gives the root 3770) stays: it is what makes the key's new files
    // land in GROUP, and check would report the root's mode otherwise.
    const mode = SEALED_DIR_MODE | (d.st.mode & 0o2000);
    if (isSealed(d.st, this.gid, mode)) this.report.alreadySealed++;
    else {
      if (!this.dryRun) {
        fs.fchownSync(d.fd, 0, this.gid);
        fs.fchmodSync(d.fd, mode);
      }
      this.report.dirs++;
    }
    // Regular files only: a directory named like a manifest must not "finish" a set and get the
    // files of an interrupted run sealed (its resume would then be refused).
    const ix = this.h.policy.profile === "duplicity" ? new DirIndex(d.files) : undefined;
    for (const name of d.names) {
      try {
        this.file(d, name, ix);
      } catch (e) {
        this.failure(rel(d.comps, name), e);
      }
    }
  }

  /** A restic lock (left the key's), one restic removed meanwhile ("gone": it does at the end of every run), or neither. */
  private lock(d: Dir, name: string, st: fs.Stats): "lock" | "gone" | undefined {
    if (d.parent === undefined || d.comps.at(-1) !== LOCKS_DIR) return undefined;
    this.h.walk.beforeOpen?.(d.comps, name);
    try {
      return whyNotLockAt(d.parent, LOCKS_DIR, d.fd, name, st) === undefined ? "lock" : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "gone";
      throw e;
    }
  }

  private unfinished(ix: DirIndex | undefined, name: string): boolean {
    const dn = ix && parseName(name);
    const set = dn ? ix!.sets.get(dn.setKey) : undefined;
    return set !== undefined && !finished(set);
  }

  private file(d: Dir, name: string, ix: DirIndex | undefined): void {
    const st = lstatIn(d.fd, name);
    if (!st || st.isDirectory()) return; // vanished, or the walk's
    const why = notPlain(st, this.h.walk.dev) ?? (st.isFile() ? undefined : "not a regular file");
    if (why) return this.odd(rel(d.comps, name), why);
    const lock = this.lock(d, name, st);
    if (lock) {
      if (lock === "lock") this.report.locks++;
      return;
    }
    if (this.unfinished(ix, name)) {
      this.report.unfinished++;
      return;
    }
    // ctime, not mtime: a client can set mtime to any date, but not ctime (set when it was published).
    if (this.now - st.ctimeMs < this.minAgeMs) {
      this.report.young++;
      return;
    }
    if (isSealed(st, this.gid, SEALED_FILE_MODE)) {
      this.report.alreadySealed++;
      return;
    }
    const f = openPlainFile(d, name, st, this.h.walk);
    if ("why" in f) return this.odd(rel(d.comps, name), f.why);
    try {
      if (!this.dryRun) {
        fs.fchownSync(f.fd, 0, this.gid);
        fs.fchmodSync(f.fd, SEALED_FILE_MODE);
      }
      this.report.files++;
    } finally {
      closeQuietly(f.fd);
    }
  }

  /** Session areas whose process is gone: what a killed session could not clean up. */
  sweep(): void {
    for (const area of SESSION_AREAS) {
      const a = openSubdir(this.h.stateFd, [], area, this.h.walk);
      if ("why" in a) continue;
      try {
        for (const name of fs.readdirSync(at(a.fd))) {
          if (pidAlive(Number.parseInt(name, 10))) continue;
          if (!this.dryRun) {
            try {
              removeTreeAt(a.fd, name, this.h.walk, [area]);
            } catch (e) {
              this.h.audit.event("sweep-failed", { area, name, reason: (e as Error).message });
              continue;
            }
          }
          this.report.swept++;
          this.h.audit.event("swept", { area, name });
        }
      } finally {
        closeQuietly(a.fd);
      }
    }
  }
}

export function seal(h: Housekeeping, opts: { now?: number; dryRun?: boolean } = {}): SealReport {
  const s = new Sealer(h, opts.now ?? Date.now(), opts.dryRun ?? false);
  for (const d of walkDirs(h.rootFd, { ...h.walk, onSkip: (comps, name, why) => s.odd(rel(comps, name), why) })) {
    try {
      s.dir(d);
    } catch (e) {
      s.failure(rel(d.comps), e);
    }
  }
  s.sweep();
  return s.report;
}

export function describe(r: SealReport, dryRun: boolean): string {
  const verb = dryRun ? "would seal" : "sealed";
  const lines = [
    `${verb} ${r.dirs} directories and ${r.files} files (${r.alreadySealed} already sealed)`,
    `left for a later run: ${r.young} files younger than the minimum age, ${r.unfinished} files of unfinished backup sets`,
    `left ${r.locks} restic lock files to the key`,
    `${dryRun ? "would sweep" : "swept"} ${r.swept} abandoned temporary or staging areas`,
  ];
  if (r.odd.length) lines.push(`not touched (${r.odd.length}):`, ...r.odd.slice(0, 100).map((o) => `  ${visible(o.path)}: ${visible(o.why)}`));
  return lines.join("\n");
}

export async function sealMain(args: string[]): Promise<number> {
  return main("seal", () => {
    const o = parseArgs(args, { "--config": "value", "--dry-run": "flag" }, "seal");
    const config = o.get("--config");
    if (!config) throw usageFault("seal", "--config is required");
    requireRoot("seal");
    const h = open(config, "seal");
    try {
      const dryRun = o.has("--dry-run");
      const r = seal(h, { dryRun });
      h.audit.event("seal", { dryRun, dirs: r.dirs, files: r.files, alreadySealed: r.alreadySealed, young: r.young, unfinished: r.unfinished, locks: r.locks, odd: r.odd.length, swept: r.swept, failed: r.failed });
      say(describe(r, dryRun));
      if (!r.failed) return EXIT.ok;
      process.stderr.write(`validate-backup seal: ${r.failed} entries could not be sealed (listed above)\n`);
      return EXIT.failed;
    } finally {
      h.close();
    }
  });
}

