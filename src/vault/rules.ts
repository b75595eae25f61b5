// The profile's naming rules and the replace policy, applied at the few places where the vault
// makes a name appear: before an upload starts (a clear early refusal), and again under the
// directory's lock at the moment of publishing, so two sessions cannot both pass the check and
// then both publish. Every published file gets its arrival recorded for prune.
//
// The rules read the whole directory (its index). A directory of a million names takes seconds to
// index, and other sessions take a lock held longer than 3 s for a stuck one and break it: so the
// index is never built under the lock. It is built outside (once per upload: before the upload
// starts, kept for its publish) and under the lock only found still current, by the directory's
// generation: a token every publish of a judged name rewrites under that lock ("" while it
// changes the directory). Changed meanwhile: the lock is let go, the index built again, and tried
// again, a few rounds; then the upload is refused rather than hold the lock for a listing.
import fs from "node:fs";
import path from "node:path";
import { nodeCrypto } from "../lazy.js";
import { VbError, existsError } from "../errors.js";
import type { Session } from "../session.js";
import { profileFor } from "../profile/profile.js";
import type { Profile } from "../profile/types.js";
import { recordArrival } from "../vault/arrivals.js";
import { tryLock, unlock, withLock, waitWhileHeld } from "../lock.js";
import { at, inodeKey, lstatAt, lstatAtOrNull } from "../fsat.js";
import { keepVersion, sameBytes } from "./versions.js";
import type { VPath } from "./paths.js";

/** How long a request waits for a name another session has answered for but not yet linked. */
const CLAIM_WAIT_MS = 10_000;

/**
 * The regular files of an open directory: all a profile's index may see. A directory, link or
 * anything else named like a backup file is never a member of a set (it could "finish" one).
 */
export function regularFiles(dirFd: number): string[] {
  // Node fills in d_type by lstat where the filesystem leaves it unknown.
  return fs
    .readdirSync(at(dirFd), { withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => d.name);
}

/** What publish() did: a new name, a replacement (the old bytes kept as a version), or nothing, the same bytes being stored already. */
export type Outcome = "new" | "replaced" | "same";

/** Rounds of indexing a directory outside its lock before a publish is refused (see above). */
export const INDEX_ROUNDS = 4;

const newGeneration = () => nodeCrypto().randomBytes(12).toString("hex");

/** An index of one directory, as of its generation `gen` and its mtime when listed. */
interface Built {
  readonly dir: string;
  gen: string;
  mtimeMs: number;
  readonly ix: unknown;
}

export class NameRules {
  readonly profile: Profile;
  /** Lock files of the backup sets this session writes: one session at a time per set. */
  private readonly held = new Set<string>();
  /** Inodes this session put in place of an older file. */
  private readonly replacements = new Set<string>();
  /** The last index built: reused while its directory is unchanged. */
  private built: Built | undefined;

  constructor(private readonly session: Session) {
    this.profile = profileFor(session.policy.profile);
  }

  private get state(): string {
    return this.session.policy.state;
  }

  private lockFile(kind: string, id: string, ext = ".lock"): string {
    return path.join(this.state, "locks", `${kind}-${nodeCrypto().createHash("sha256").update(id).digest("hex").slice(0, 24)}${ext}`);
  }

  /** The generation of directory `dir` (an inodeKey): "none" before any publish, "" while one changes it. */
  private generation(dir: string): string {
    try {
      return fs.readFileSync(this.lockFile("dir", dir, ".gen"), "latin1");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "none";
      throw e;
    }
  }

  /** The index of dirFd, outside any lock: the last one if nothing in the directory changed since. */
  private index(dirFd: number): unknown {
    const st = fs.fstatSync(dirFd);
    const dir = inodeKey(st);
    const gen = this.generation(dir); // before the listing: a publish after it changes the generation
    const b = this.built;
    if (b && gen !== "" && b.dir === dir && b.gen === gen && b.mtimeMs === st.mtimeMs) return b.ix;
    this.built = undefined; // never two indexes of a huge directory in memory at once
    const ix = this.profile.index(regularFiles(dirFd));
    if (gen !== "") this.built = { dir, gen, mtimeMs: st.mtimeMs, ix };
    return ix;
  }

  /** Under the directory's lock: the index built before, if no judged name was published since. */
  private current(dir: string): Built | undefined {
    const b = this.built;
    return b && b.dir === dir && b.gen !== "" && b.gen === this.generation(dir) ? b : undefined;
  }

  /**
   * Under the directory's lock: change it (`fn`), with the generation "" meanwhile and a new one
   * after, so that every index built before (other sessions') is no longer current. Ours (`b`)
   * follows the change: `added` is the name that appeared, if any.
   */
  private changing(dirFd: number, b: Built, added: string | undefined, fn: () => void): void {
    const file = this.lockFile("dir", b.dir, ".gen");
    fs.writeFileSync(file, "", { mode: 0o600 });
    let gen = "";
    try {
      fn();
      if (added !== undefined) this.profile.add(b.ix, added);
      gen = newGeneration();
      b.gen = gen;
      b.mtimeMs = fs.fstatSync(dirFd).mtimeMs;
    } finally {
      if (gen === "") this.built = undefined;
      try {
        fs.writeFileSync(file, gen || newGeneration(), { mode: 0o600 });
      } catch {
        /* left "": every index of the directory is built again, the safe side */
      }
    }
  }

  /** May `name` be added to the directory dirFd? Throws NOT_ALLOWED if the profile says no. */
  checkNew(dirFd: number, name: string, v: VPath, ix = () => this.index(dirFd)): void {
    if (!this.profile.judges(name)) return;
    const key = this.profile.checkNew(ix(), name, Date.now() / 1000, v.display);
    if (key) this.holdSet(dirFd, key, v);
  }

  /**
   * May a directory named `name` be made in dirFd? Never under a name the profile has a rule for:
   * duplicity never makes one, and a directory there would only block the file's name. A name
   * refused as a file says why first.
   */
  checkNewDir(dirFd: number, name: string, v: VPath): void {
    if (!this.profile.judges(name)) return;
    this.profile.checkNew(this.index(dirFd), name, Date.now() / 1000, v.display);
    throw new VbError("NOT_ALLOWED", `${this.profile.name} profile: '${v.display}' is named like a backup file, never a directory`);
  }

  /** Could a file of this name ever be replaced? (Without a directory listing.) */
  mayReplace(name: string): boolean {
    return this.session.policy.replace !== "never" && this.profile.judges(name);
  }

  isReplacement(st: fs.Stats): boolean {
    return this.replacements.has(inodeKey(st));
  }

  /** May the stored `st` at (dirFd, name) be replaced? Throws EXISTS unless the replace policy allows it. */
  checkReplace(dirFd: number, name: string, v: VPath, st: fs.Stats, ix = () => this.index(dirFd)): void {
    if (!st.isFile() || !this.mayReplace(name)) throw existsError(v.display);
    const key = this.profile.checkReplace(ix(), name, v.display);
    this.holdSet(dirFd, key, v);
  }

  /** Before an upload starts: the inode it may replace, or undefined for a new name. */
  beforeCreate(dirFd: number, name: string, v: VPath): string | undefined {
    const cur = lstatAtOrNull(dirFd, name);
    if (!cur) {
      this.checkNew(dirFd, name, v);
      return undefined;
    }
    this.checkReplace(dirFd, name, v, cur);
    return inodeKey(cur);
  }

  private holdSet(dirFd: number, key: string, v: VPath): void {
    const file = this.lockFile("set", `${inodeKey(fs.fstatSync(dirFd))}/${key}`);
    if (this.held.has(file)) return;
    if (!tryLock(file)) throw new VbError("NOT_ALLOWED", `'${v.display}': another session is writing the same backup set; try again when it has finished`);
    this.held.add(file);
  }

  /**
   * Make a finished file (`src`, whose stat is `file`) appear under (dirFd, name). A new name:
   * link(2) (which never replaces). A replacement (`replaces` is the inode the checks allowed):
   * the old file is kept as a version, then `src` is renamed over it in one step, so the name
   * never shows a partial file; unless the stored file already holds the very same bytes: then
   * nothing changes ("same"), and no version slot is used.
   */
  publish(dirFd: number, name: string, v: VPath, replaces: string | undefined, src: string, file: fs.Stats, renamedFrom?: VPath): Outcome {
    const link = () => fs.linkSync(src, at(dirFd, name));
    // Compared outside the lock (a volume may be big); this session holds its set's lock, so no
    // other session can replace the stored file meanwhile, and sameBytes checks it is `replaces`.
    if (replaces !== undefined && sameBytes(dirFd, name, replaces, src)) return "same";
    // No rule of the profile reads the directory for this name and nothing is replaced: link(2)
    // is the whole check, atomic by itself (EEXIST), so the directory's lock would add nothing.
    let how: Outcome = "new";
    if (replaces === undefined && !this.profile.judges(name)) {
      const claim = this.claim(dirFd, name, v);
      try {
        link();
      } finally {
        unlock(claim, false);
      }
    } else how = this.publishLocked(dirFd, name, v, replaces, link, src);
    this.arrived(v, file, renamedFrom);
    return how;
  }

  /**
   * A new name no rule judges is claimed while it is linked: an upload answered before its link
   * (Vault.admitLater) holds the claim from its checks to its link, so no other session can take
   * the name in between and leave the answered file unpublished. Throws EXISTS if it is claimed.
   */
  claim(dirFd: number, name: string, v: VPath): string {
    const file = this.claimFile(dirFd, name);
    if (!tryLock(file)) throw new VbError("EXISTS", `append-only: '${v.display}' is being stored by another session`);
    return file;
  }

  /**
   * Is (dirFd, name) claimed by another session? Then wait (up to CLAIM_WAIT_MS) for its link. True
   * if it was, or if the name is there now: a claim given up between the caller's lookup and this
   * look was given up after its link (rclone's SETSTAT on a second session met exactly that).
   */
  awaitClaim(dirFd: number, name: string): boolean {
    return waitWhileHeld(this.claimFile(dirFd, name), CLAIM_WAIT_MS) || lstatAtOrNull(dirFd, name) !== null;
  }

  /** The lock file of the claim on (dirFd, name): by the directory's inode, whatever path led to it. */
  private claimFile(dirFd: number, name: string): string {
    return this.lockFile("name", `${inodeKey(fs.fstatSync(dirFd))}/${name}`);
  }

  /**
   * Link a file under a name claimed by claim(), and give the claim up once the temporary name is
   * gone too: a session waiting for the claim must find a file with one link, as it was answered.
   * Returns whether the temporary name is gone.
   */
  publishClaimed(claim: string, dirFd: number, name: string, v: VPath, src: string, file: fs.Stats): boolean {
    try {
      fs.linkSync(src, at(dirFd, name));
      this.arrived(v, file);
      try {
        fs.unlinkSync(src);
        return true;
      } catch {
        return false; // the upload's own cleanup tries again
      }
    } finally {
      unlock(claim, false);
    }
  }

  private publishLocked(dirFd: number, name: string, v: VPath, replaces: string | undefined, link: () => void, src: string): Outcome {
    const dir = inodeKey(fs.fstatSync(dirFd));
    for (let round = 1; ; round++) {
      const how = withLock(this.lockFile("dir", dir), (): Outcome | undefined => {
        const b = this.current(dir);
        if (!b) {
          // "" under the lock: a session died changing the directory. A new generation lets the
          // next index be current again (else no judged name could ever be published here).
          if (this.generation(dir) === "") fs.writeFileSync(this.lockFile("dir", dir, ".gen"), newGeneration(), { mode: 0o600 });
          if (round < INDEX_ROUNDS) return undefined; // indexed again outside the lock
          throw new VbError("NOT_ALLOWED", `'${v.display}': its directory changed ${INDEX_ROUNDS} times while its names were being read; try again`);
        }
        const cur = lstatAtOrNull(dirFd, name);
        if (!cur) {
          this.checkNew(dirFd, name, v, () => b.ix);
          this.changing(dirFd, b, name, link);
          return "new";
        }
        if (replaces === undefined) throw existsError(v.display);
        if (inodeKey(cur) !== replaces) throw new VbError("EXISTS", `append-only: '${v.display}' changed meanwhile and was not replaced`);
        this.checkReplace(dirFd, name, v, cur, () => b.ix);
        const version = keepVersion(this.state, v.display, dirFd, name, cur);
        this.changing(dirFd, b, undefined, () => fs.renameSync(src, at(dirFd, name)));
        this.replacements.add(inodeKey(lstatAt(dirFd, name)));
        this.session.audit.event("replace", { anomaly: true, path: v.display, version, oldSize: cur.size, policy: "resume" });
        return "replaced";
      });
      if (how) return how;
      this.index(dirFd);
    }
  }

  /** `file`: what was published (link and rename keep the inode, so no need to look again). */
  private arrived(v: VPath, file: fs.Stats, renamedFrom?: VPath): void {
    try {
      recordArrival(this.state, v.display, file, Date.now(), this.session.policy.label, renamedFrom?.display);
    } catch (e) {
      // The file is stored; without a record prune will simply never remove it.
      this.session.audit.event("arrival-not-recorded", { anomaly: true, path: v.display, reason: (e as Error).message });
    }
  }

  /** With `pull: "metadata"`: may the file `name` be read? `names` lists its directory, if needed. */
  canReadMetadata(name: string, names: () => string[]): boolean {
    return this.profile.isMetadataRead(this.profile.readNeedsIndex(name) ? this.profile.index(names()) : undefined, name);
  }

  /** End of session. */
  release(): void {
    for (const f of this.held) unlock(f);
    this.held.clear();
  }
}
