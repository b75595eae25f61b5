// The vault: the only module that writes below the backup root (and in `state`). Every protocol
// asks it; it enforces confinement, read-only mode and the append-only rules in one place.
//
// Writes only ever create: directories with mkdir(2), files by link(2) of a finished temporary
// file from `state`, which fails with EEXIST instead of replacing. The only removals and renames
// are of regular files this very session published (own.ts: tracked so that a reused inode never
// passes for one), and of restic's lock files, which hold no backup data (profile/restic.ts).
import fs from "node:fs";
import path from "node:path";
import { VbError, fromErrno, existsError } from "../errors.js";
import type { Session } from "../session.js";
import { permits, demand } from "../gate/access.js";
import { Confiner, vpath, checkName, type VPath } from "./paths.js";
import { at, openDirAt, lstatAt, lstatAtOrNull, closeQuietly, inodeKey, DIR_FLAGS, READ_FLAGS } from "../fsat.js";
import { Upload } from "./upload.js";
import { fileMode, dirMode, type Arrival, type Published } from "./admission.js";
import { guardUpload } from "../pgp/guard.js";
import { sha256OfFd } from "./hasher.js";
import { sweepStale, removeTree } from "./state.js";
import { NameRules, regularFiles, type Outcome } from "./rules.js";
import { OwnFiles, sameFile } from "./own.js";
import { RecentArrivals, whyNotTimes } from "./recent.js";
import { Quota } from "./quota.js";
import { whyNotLockAt } from "./locks.js";
import { recordRemoval } from "./arrivals.js";
import { unlock } from "../lock.js";
import { TmpFiles } from "./tmpfiles.js";
import { LOCKS_DIR } from "../profile/restic.js";

/** Directories kept open for their fsync at the end of the session; past this they are synced at once. */
const MAX_UNSYNCED_DIRS = 64;
/** Uploads answered before their fsync and link (admitLater): each holds two descriptors and its quota. */
const MAX_LATER = 32;
/** Reads after which a session's locks are taken by link(2) (see openRead). */
const LINK_LOCKS_AFTER = 4;

/** link(2) or rename(2) found the name taken meanwhile (EEXIST): the append-only refusal; else e. */
function nameTaken(e: unknown, display: string): unknown {
  return (e as NodeJS.ErrnoException).code === "EEXIST" ? existsError(display) : e;
}

export interface Entry {
  name: string;
  st: fs.Stats;
}

export class Vault {
  readonly confiner: Confiner;
  readonly readOnly: boolean;
  private readonly rootFd: number;
  private readonly ownFiles = new OwnFiles();
  private readonly ownDirs = new Set<string>();
  private readonly uploads = new Set<Upload>();
  /** Uploads answered before their names appeared (admitLater), by path: done when true (published) or false. */
  private readonly later = new Map<string, Promise<boolean>>();
  /** Directories with new names not yet fsynced, by inode: see syncDirLater(). */
  private readonly unsyncedDirs = new Map<string, number>();
  /** The profile's naming rules and the replace policy (src/vault/rules.ts). */
  readonly rules: NameRules;
  /** The arrivals of the last hour, read once a SETSTAT asks for a file of another session. */
  private recent: RecentArrivals | undefined;
  /** The key's quota and the filesystem's free-space reserve (src/vault/quota.ts). */
  readonly quota: Quota;
  /** This session's temporary area, where every upload starts (src/vault/tmpfiles.ts). */
  readonly tmp: TmpFiles;
  readonly stagingDir: string;
  /** Files opened for reading (openRead), to know when locks by link(2) pay off. */
  private reads = 0;

  constructor(readonly session: Session) {
    const { policy, rootReal } = session;
    this.readOnly = permits(policy, "write") === "no";
    this.confiner = new Confiner([policy.root, rootReal]);
    this.rootFd = fs.openSync(rootReal, DIR_FLAGS);
    this.tmp = new TmpFiles(path.join(policy.state, "tmp", session.sid));
    this.stagingDir = path.join(policy.state, "staging", session.sid);
    this.rules = new NameRules(session);
    this.quota = new Quota(session);
    if (!this.readOnly) sweepStale(policy.state, session.audit);
  }

  /** Client path -> confined path (throws OUTSIDE_ROOT). */
  resolve(p: string): VPath {
    return this.confiner.confine(p);
  }

  private assertWritable(v: VPath, what: string): void {
    demand(this.session.policy, "write", `'${v.display}' cannot be ${what}`);
  }

  /**
   * What changes the stored tree is never done without its audit line (audit/budget.ts): past the
   * session's budget for `event`, or with a log that cannot be written, the act is refused instead.
   */
  private assertRecordable(v: VPath, event: string, what: string): void {
    const { audit } = this.session;
    if (!audit.ok) throw new VbError("IO", `'${v.display}' cannot be ${what}: the audit log cannot be written`);
    if (!audit.budget.room(event))
      throw new VbError("QUOTA", `'${v.display}' cannot be ${what}: this session has made as many changes as one session may record (${audit.budget.limitOf(event)}); start a new session`);
  }

  /** Open the directory at `comps` by walking from the root fd, never following a link. */
  openDir(comps: readonly string[], display = comps.join("/") || "."): number {
    // The walk starts at the root's own descriptor, which stays open: a copy of it is opened only
    // for the root itself (the caller closes what it gets). Every open of a small download walks
    // here, and re-opening the root first was a third of its opens.
    let fd = comps.length === 0 ? fs.openSync(at(this.rootFd), DIR_FLAGS) : this.rootFd;
    try {
      for (const c of comps) {
        let next: number;
        try {
          next = openDirAt(fd, c);
        } catch (e) {
          // O_DIRECTORY|O_NOFOLLOW on a symbolic link fails with ENOTDIR, not ELOOP: report the link
          // as the refusal it is (audited), not as a missing directory.
          if ((e as NodeJS.ErrnoException).code === "ENOTDIR" && lstatAtOrNull(fd, c)?.isSymbolicLink()) throw Object.assign(new Error(c), { code: "ELOOP" });
          throw e;
        }
        if (fd !== this.rootFd) fs.closeSync(fd);
        fd = next;
      }
      return fd;
    } catch (e) {
      if (fd !== this.rootFd) closeQuietly(fd);
      throw this.walkError(e, display);
    }
  }

  private walkError(e: unknown, display: string): VbError {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP") return new VbError("OUTSIDE_ROOT", `'${display}': crosses a symbolic link, which is never followed`);
    return fromErrno(e, display);
  }

  /** Run fn with the parent directory of v open; v must not be the root. */
  private withParent<T>(v: VPath, fn: (dirFd: number, name: string) => T): T {
    if (v.comps.length === 0) throw new VbError("NOT_ALLOWED", "the backup root itself cannot be changed");
    const name = v.comps[v.comps.length - 1]!;
    const dirFd = this.openDir(v.comps.slice(0, -1), v.display);
    try {
      return fn(dirFd, name);
    } catch (e) {
      throw this.walkError(e, v.display);
    } finally {
      closeQuietly(dirFd);
    }
  }

  /** lstat semantics: a symbolic link is reported as one, never followed. */
  lstat(v: VPath): fs.Stats {
    if (v.comps.length === 0) return fs.fstatSync(this.rootFd);
    return this.withParent(v, (dirFd, name) => lstatAt(dirFd, name));
  }

  exists(v: VPath): boolean {
    try {
      this.lstat(v);
      return true;
    } catch (e) {
      if (e instanceof VbError && e.code === "NOT_FOUND") return false;
      throw e;
    }
  }

  /** List a directory: names and lstat of each, streamed in batches. */
  *list(v: VPath, batch = 100): Generator<Entry[]> {
    const fd = this.openDir(v.comps, v.display);
    let dir: fs.Dir | undefined;
    try {
      dir = fs.opendirSync(at(fd));
      let out: Entry[] = [];
      for (let d = dir.readSync(); d; d = dir.readSync()) {
        try {
          out.push({ name: d.name, st: lstatAt(fd, d.name) });
        } catch {
          continue; // vanished between readdir and lstat
        }
        if (out.length >= batch) {
          yield out;
          out = [];
        }
      }
      if (out.length) yield out;
    } finally {
      try {
        dir?.closeSync();
      } catch {
        /* closed */
      }
      closeQuietly(fd);
    }
  }

  /** Open a regular file for reading; the caller owns (and closes) the fd. */
  openRead(v: VPath): { fd: number; st: fs.Stats } {
    if (!this.canRead(v)) throw new VbError("NOT_ALLOWED", `'${v.display}' cannot be read with this key (pull: ${String(this.session.policy.pull)})`);
    // Each file read is an audit line under the log's lock: past a few, the temporary area's owner
    // file makes every later lock a link(2) instead of a new inode. Not for a read-only key: its
    // sessions sweep no areas, so one killed would leave its area for good.
    if (++this.reads === LINK_LOCKS_AFTER && !this.readOnly)
      try {
        this.tmp.make();
      } catch {
        /* locks stay symbolic links */
      }
    const fd = this.withParent(v, (dirFd, name) => fs.openSync(at(dirFd, name), READ_FLAGS));
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      closeQuietly(fd);
      throw new VbError("NOT_ALLOWED", `'${v.display}': not a regular file`);
    }
    return { fd, st };
  }

  mkdir(v: VPath, mode = 0o750): void {
    this.assertWritable(v, "created");
    this.assertRecordable(v, "mkdir", "created");
    this.withParent(v, (dirFd, name) => {
      // Every protocol's directories come here (SFTP, scp D, mkdir -p, rsync's publisher).
      this.rules.checkNewDir(dirFd, name, v);
      fs.mkdirSync(at(dirFd, name), dirMode(mode));
      const fd = openDirAt(dirFd, name);
      try {
        this.ownDirs.add(inodeKey(fs.fstatSync(fd)));
      } finally {
        fs.closeSync(fd);
      }
    });
    this.session.audit.event("mkdir", { path: v.display });
  }

  /** Create each missing directory of v (like mkdir -p); existing directories are fine. */
  mkdirp(v: VPath): void {
    for (let i = 1; i <= v.comps.length; i++) {
      const sub = vpath(v.comps.slice(0, i));
      let st: fs.Stats | null = null;
      try {
        st = this.lstat(sub);
      } catch (e) {
        if (!(e instanceof VbError && e.code === "NOT_FOUND")) throw e;
      }
      if (st === null) {
        try {
          this.mkdir(sub);
        } catch (e) {
          if (!(e instanceof VbError && e.code === "EXISTS")) throw e; // made by a concurrent session
        }
      } else if (!st.isDirectory()) throw new VbError("EXISTS", `'${sub.display}': exists and is not a directory`);
    }
  }

  isOwnDir(st: fs.Stats): boolean {
    return this.ownDirs.has(inodeKey(st));
  }

  isOwnFile(st: fs.Stats): boolean {
    // A file that replaced another stands where something older stood: as immutable as that was.
    return st.isFile() && this.ownFiles.has(st) && !this.rules.isReplacement(st);
  }

  /**
   * May the client read this file's contents? Listing and stat are not reads. The protocols that
   * hand a path to a child process (rsync --sender) must ask before; openRead asks itself.
   */
  canRead(v: VPath): boolean {
    const verdict = permits(this.session.policy, "pull");
    if (verdict !== "metadata") return verdict === "yes";
    if (v.comps.length === 0) return false;
    return this.rules.canReadMetadata(v.comps[v.comps.length - 1]!, () =>
      this.withParent(v, (dirFd) => regularFiles(dirFd)),
    );
  }

  /** Start an upload of a new file; nothing is visible under its name until commit(). */
  create(v: VPath, mode = 0o640): Upload {
    this.assertWritable(v, "written");
    if (v.comps.length === 0) throw new VbError("NOT_ALLOWED", "the backup root itself cannot be written");
    const limit = this.session.policy.limits.maxOpenHandles;
    for (const up of this.uploads) if (up.ended) this.uploads.delete(up);
    if (this.uploads.size >= limit) throw new VbError("QUOTA", `at most ${limit} uploads may be open at once`);
    const name = v.comps[v.comps.length - 1]!;
    checkName(name, v.display);
    if (this.later.has(v.display)) throw existsError(v.display); // answered, its name on its way
    const parentFd = this.openDir(v.comps.slice(0, -1), v.display);
    try {
      const replaces = this.rules.beforeCreate(parentFd, name, v);
      const { path: tmpPath, fd } = this.tmp.take();
      const up = new Upload(this.session, { v, parentFd, tmpPath, fd, mode, replaces, admit: (a) => this.admit(a), admitLater: (a) => this.admitLater(a), quota: this.quota });
      this.uploads.add(up);
      return up;
    } catch (e) {
      closeQuietly(parentFd);
      throw this.walkError(e, v.display);
    }
  }

  /**
   * The one way a file enters the tree, for every protocol (an upload's commit, rsync's publisher):
   * limits, the mode policy, fsync, the encryption guard, hash, link(2) that never replaces (or a
   * replacement the policy allows), counters and the audit line. Throws and stores nothing on any
   * refusal (EXISTS if the name is taken).
   */
  admit(a: Arrival): Published {
    const shown = a.v.display;
    let dirFd = a.dir?.fd;
    try {
      const { name, file, sha256 } = this.judge(a, true);
      dirFd ??= this.openDir(a.v.comps.slice(0, -1), shown);
      let replaces = a.dir?.replaces;
      const old = a.dir ? null : lstatAtOrNull(dirFd, name);
      if (old) {
        this.rules.checkReplace(dirFd, name, a.v, old);
        replaces = inodeKey(old);
      }
      let how: Outcome;
      try {
        how = this.rules.publish(dirFd, name, a.v, replaces, a.src, file);
      } catch (e) {
        throw nameTaken(e, a.v.display);
      }
      // A staged name was written by rsync, not by us: make sure what appeared is what we checked.
      if (how === "same") {
        /* the stored file stays, and stays whatever it was (another session's, or ours) */
      } else if (!a.dir && inodeKey(lstatAt(dirFd, name)) !== inodeKey(file))
        this.session.audit.event("anomaly", { anomaly: true, path: shown, reason: "staged file changed while being published" });
      else this.ownFiles.add(a.fd, file);
      const pub = this.landed(a, how, sha256);
      // The new name reaches the disk with the directory's fsync at the end of the session (one per
      // directory, not one per file: what made small uploads crawl), or with the caller's syncfs.
      if (!a.synced && how !== "same") this.syncDirLater(dirFd);
      else closeQuietly(dirFd);
      dirFd = undefined;
      return pub;
    } catch (e) {
      this.session.counters.skipped++;
      throw this.walkError(e, shown);
    } finally {
      if (dirFd !== undefined) closeQuietly(dirFd);
    }
  }

  /**
   * admit() for an upload whose CLOSE may be answered before its fsync and link have finished, so
   * that the client sends the next file while the disk catches up (OpenSSH's sftp waits for every
   * CLOSE; with an fsync in each answer, many small files crawled). Only a new name that no rule of
   * the profile judges qualifies: link(2) is then its whole check. Everything that can refuse is
   * judged here, before the answer, and the name is claimed until it is linked (NameRules.claim: no
   * other session can take it meanwhile); what can still fail after the answer (the fsync's EIO, a
   * full directory) is a `publish-failed` line, never dropped (its publish line had room). The
   * bytes are still on disk before the name appears. Undefined: not eligible, admit() it now.
   */
  admitLater(a: Arrival): Promise<boolean> | undefined {
    const name = a.v.comps[a.v.comps.length - 1];
    if (!a.dir || a.dir.replaces !== undefined || a.synced || name === undefined || !this.mayAdmitLater(a.v)) return undefined;
    const shown = a.v.display;
    const dirFd = a.dir.fd;
    let judged: { file: fs.Stats; sha256: string };
    let claim: string | undefined;
    try {
      judged = this.judge(a, false);
      claim = this.rules.claim(dirFd, name, a.v);
      if (lstatAtOrNull(dirFd, name)) throw existsError(shown);
    } catch (e) {
      if (claim) unlock(claim, false);
      this.session.counters.skipped++;
      closeQuietly(dirFd);
      throw this.walkError(e, shown);
    }
    const claimed = claim;
    const done = new Promise<boolean>((resolve) =>
      fs.fsync(a.fd, (err) => {
        this.later.delete(shown);
        try {
          if (err) {
            unlock(claimed, false);
            throw err;
          }
          try {
            if (this.rules.publishClaimed(claimed, dirFd, name, a.v, a.src, judged.file)) a.srcGone?.();
          } catch (e) {
            throw nameTaken(e, shown);
          }
          this.ownFiles.add(a.fd, judged.file);
          this.landed(a, "new", judged.sha256);
          this.syncDirLater(dirFd);
          resolve(true);
        } catch (e) {
          this.session.counters.skipped++;
          const why = this.walkError(e, shown);
          this.session.audit.event("publish-failed", { anomaly: true, path: shown, code: why.code, reason: why.message, bytes: a.size, acknowledged: true });
          closeQuietly(dirFd);
          resolve(false);
        }
      }),
    );
    this.later.set(shown, done);
    return done;
  }

  /**
   * A name another session has answered an upload for, but not linked yet (admitLater): wait for
   * it, as the client was told it is there. True if there was one (ask again); never throws.
   */
  awaitClaim(p: string): boolean {
    try {
      return this.withParent(this.resolve(p), (dirFd, name) => this.rules.awaitClaim(dirFd, name));
    } catch {
      return false;
    }
  }

  /** May an upload to v be answered before its name appears (admitLater)? */
  mayAdmitLater(v: VPath): boolean {
    const name = v.comps[v.comps.length - 1];
    return name !== undefined && !this.rules.profile.judges(name) && !this.later.has(v.display) && this.later.size < MAX_LATER;
  }

  /** Are answered uploads on their way to their names (admitLater)? */
  get publishing(): boolean {
    return this.later.size > 0;
  }

  /** Answered uploads not yet under their names: requests that could see them wait for this. */
  pendingPublishes(): Promise<void> | undefined {
    return this.later.size ? Promise.all(this.later.values()).then(() => undefined) : undefined;
  }

  /** What every admission checks before the name is touched; `sync`: fsync now (else the caller does). */
  private judge(a: Arrival, sync: boolean): { name: string; file: fs.Stats; sha256: string } {
    const { counters, policy } = this.session;
    const { limits } = policy;
    const shown = a.v.display;
    this.assertWritable(a.v, "written");
    this.assertRecordable(a.v, "publish", "stored");
    if (a.size > limits.maxFileBytes) throw new VbError("QUOTA", `'${shown}': file larger than the limit of ${limits.maxFileBytes} bytes`);
    if (counters.bytesIn + a.uncounted > limits.maxSessionBytes) throw new VbError("QUOTA", `session upload limit of ${limits.maxSessionBytes} bytes reached`);
    fs.fchmodSync(a.fd, fileMode(a.mode));
    if (a.times) fs.futimesSync(a.fd, a.times.atime, a.times.mtime);
    if (sync && !a.synced) fs.fsyncSync(a.fd);
    guardUpload(this.session, a.fd, a.size, shown);
    const sha256 = a.sha256?.() ?? sha256OfFd(a.fd, a.size);
    const file = fs.fstatSync(a.fd);
    if (a.v.comps.length === 0) throw new VbError("NOT_ALLOWED", "the backup root itself cannot be written");
    const name = a.v.comps[a.v.comps.length - 1]!;
    checkName(name, shown);
    return { name, file, sha256 };
  }

  /** The name has appeared: count it and write its line. */
  private landed(a: Arrival, how: Outcome, sha256: string): Published {
    const { counters, audit } = this.session;
    counters.published++;
    counters.bytesIn += a.uncounted;
    try {
      this.quota.stored(a.size);
    } catch (e) {
      // Stored all the same: the record is walked again within the hour.
      audit.event("error", { code: "IO", path: a.v.display, reason: `quota record not updated: ${(e as Error).message}` });
    }
    const pub = { path: a.v.display, size: a.size, sha256 };
    // "resend-same": these bytes were stored under this name already; nothing changed.
    audit.event(how === "same" ? "resend-same" : "publish", a.via ? { ...pub, via: a.via } : pub);
    return pub;
  }

  /** A regular file this session published may get a new, unused name (link + unlink, never rename(2)). */
  renameOwn(from: VPath, to: VPath): void {
    this.assertWritable(from, "renamed");
    this.assertRecordable(from, "rename", "renamed");
    const st = this.lstat(from);
    if (!this.isOwnFile(st))
      throw new VbError("IMMUTABLE", `append-only: '${from.display}' existed before this session (or is not a regular file) and cannot be renamed`);
    if (to.comps.length === 0) throw existsError(".");
    // Onto an existing name only as the replace policy allows (pexpect+sftp resuming duplicity).
    // Onto itself: nothing to do, as rename(2) does (and no version slot used, no anomaly).
    const how = this.withParent(from, (fromDir, fromName) =>
      this.withParent(to, (toDir, toName): Outcome | "itself" => {
        checkName(toName, to.display);
        if (!sameFile(lstatAt(fromDir, fromName), st)) throw new VbError("IMMUTABLE", `'${from.display}' changed meanwhile`);
        const old = lstatAtOrNull(toDir, toName);
        if (old && sameFile(old, st)) return "itself";
        if (old) this.rules.checkReplace(toDir, toName, to, old);
        try {
          return this.rules.publish(toDir, toName, to, old ? inodeKey(old) : undefined, at(fromDir, fromName), st, from);
        } catch (e) {
          throw nameTaken(e, to.display);
        }
      }),
    );
    // "same": `to` holds these bytes already; the own file goes, as if it had been renamed there.
    if (how === "new" || how === "same") this.unlinkIfSame(from, st);
    this.session.audit.event("rename", { from: from.display, to: to.display, ...(how === "same" || how === "itself" ? { same: true } : {}) });
  }

  /**
   * What this session published itself may be removed; and a restic lock, whichever session of
   * the key stored it (profile/restic.ts). Nothing else.
   */
  remove(v: VPath): void {
    this.assertWritable(v, "removed");
    this.assertRecordable(v, "remove-own", "removed"); // remove-lock is the same kind (audit/budget.ts)
    const st = this.lstat(v);
    if (this.isOwnFile(st)) {
      this.unlinkIfSame(v, st);
      this.ownFiles.forget(st);
      this.removed(v, st);
      this.session.audit.event("remove-own", { path: v.display });
      return;
    }
    const sha256 = this.removeLock(v, st);
    this.removed(v, st);
    this.session.audit.event("remove-lock", { path: v.display, size: st.size, sha256 });
  }

  /** Unlink the restic lock v (lstat `st`) or throw IMMUTABLE saying why it is none; returns its SHA-256 (its name). */
  private removeLock(v: VPath, st: fs.Stats): string {
    const cannot = `append-only: '${v.display}' cannot be removed`;
    const [dir, name] = v.comps.slice(-2);
    // Only a name in a directory called locks/ hears why it is no lock; any other keeps the short answer.
    if (v.comps.length < 2 || dir !== LOCKS_DIR) throw new VbError("IMMUTABLE", cannot);
    const repoFd = this.openDir(v.comps.slice(0, -2), v.display);
    let dirFd: number | undefined;
    try {
      dirFd = openDirAt(repoFd, dir);
      const why = whyNotLockAt(repoFd, dir, dirFd, name!, st, process.geteuid!());
      if (why) throw new VbError("IMMUTABLE", `${cannot}: ${why}`);
      if (!sameFile(lstatAt(dirFd, name!), st)) throw new VbError("IMMUTABLE", `'${v.display}' changed meanwhile; left alone`);
      fs.unlinkSync(at(dirFd, name!));
      return name!;
    } catch (e) {
      throw this.walkError(e, v.display);
    } finally {
      closeQuietly(dirFd);
      closeQuietly(repoFd);
    }
  }

  /** A stored file is gone: its bytes leave the quota, its arrival the record. */
  private removed(v: VPath, st: fs.Stats): void {
    try {
      this.quota.removed(st.size);
    } catch {
      /* the record is walked again within the hour */
    }
    try {
      recordRemoval(this.session.policy.state, v.display, st);
    } catch {
      /* a line for a file that is gone: believed for no other file (its inode is named) */
    }
  }

  private unlinkIfSame(v: VPath, st: fs.Stats): void {
    this.withParent(v, (dirFd, name) => {
      const now = lstatAt(dirFd, name);
      if (!sameFile(now, st)) throw new VbError("IMMUTABLE", `'${v.display}' changed meanwhile; left alone`);
      fs.unlinkSync(at(dirFd, name));
    });
  }

  /** A path usable by a child process that we hand a confined name (rsync --sender). */
  pathOf(v: VPath): string {
    return this.confiner.absolute(v);
  }

  /**
   * Change mode or times of something this session created. Of a file this key published on
   * another of its sessions within the last hour, the times only (recent.ts); anything else is
   * immutable.
   */
  setAttrs(v: VPath, attrs: { mode?: number; atime?: number; mtime?: number }): void {
    this.assertWritable(v, "changed");
    const st = this.lstat(v);
    const own = st.isDirectory() ? this.isOwnDir(st) : this.isOwnFile(st);
    if (!own && attrs.mode === undefined && attrs.atime !== undefined && attrs.mtime !== undefined && !st.isDirectory())
      return this.setRecentTimes(v, st, attrs.atime, attrs.mtime);
    if (!own) throw new VbError("IMMUTABLE", `append-only: '${v.display}' existed before this session and cannot be changed`);
    this.withParent(v, (dirFd, name) => {
      const fd = fs.openSync(at(dirFd, name), st.isDirectory() ? DIR_FLAGS : READ_FLAGS);
      try {
        if (!sameFile(fs.fstatSync(fd), st)) throw new VbError("IMMUTABLE", `'${v.display}' changed meanwhile`);
        if (attrs.mode !== undefined) fs.fchmodSync(fd, (st.isDirectory() ? dirMode : fileMode)(attrs.mode));
        if (attrs.atime !== undefined || attrs.mtime !== undefined)
          fs.futimesSync(fd, attrs.atime ?? st.atimeMs / 1000, attrs.mtime ?? st.mtimeMs / 1000);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  private setRecentTimes(v: VPath, st: fs.Stats, atime: number, mtime: number): void {
    const { policy, audit } = this.session;
    this.recent ??= new RecentArrivals(policy.state);
    const arrival = this.recent.find(v.display);
    const judge = (file: fs.Stats) => whyNotTimes({ st: file, arrival, label: policy.label, uid: process.geteuid!(), now: Date.now() });
    const why = judge(st);
    if (why || !arrival) throw new VbError("IMMUTABLE", `append-only: '${v.display}' existed before this session and cannot be changed; its times neither, as ${why}`);
    this.withParent(v, (dirFd, name) => {
      const fd = fs.openSync(at(dirFd, name), READ_FLAGS);
      try {
        // The same rule on what was opened: a file swapped or sealed since the lstat is left alone.
        if (judge(fs.fstatSync(fd))) throw new VbError("IMMUTABLE", `'${v.display}' changed meanwhile; left alone`);
        fs.futimesSync(fd, atime, mtime);
      } finally {
        fs.closeSync(fd);
      }
    });
    // A client looping on SETSTAT must not fill the append-only log: the budget (audit/budget.ts)
    // stops these lines, session-end counts the rest.
    audit.event("times-set", { path: v.display, atime, mtime, published: new Date(arrival.t).toISOString() });
  }

  /**
   * A directory that got a new name: its fsync waits for the end of the session (or for more
   * directories than we keep open). Takes over the descriptor.
   */
  syncDirLater(fd: number): void {
    let key: string;
    try {
      key = inodeKey(fs.fstatSync(fd));
    } catch {
      return closeQuietly(fd);
    }
    if (this.unsyncedDirs.has(key)) return closeQuietly(fd);
    if (this.unsyncedDirs.size >= MAX_UNSYNCED_DIRS) this.syncDirs();
    this.unsyncedDirs.set(key, fd);
  }

  private syncDirs(): void {
    for (const fd of this.unsyncedDirs.values()) {
      try {
        fs.fsyncSync(fd);
      } catch {
        /* some filesystems refuse fsync on directories */
      }
      closeQuietly(fd);
    }
    this.unsyncedDirs.clear();
  }

  /**
   * Run fn with this session's staging directory made (0700, empty), and remove it afterwards
   * whatever happens; if the process is ended first, by the exit hook or else the next session.
   */
  async withStaging<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = this.stagingDir;
    fs.mkdirSync(dir, { mode: 0o700 });
    const cleanup = () => removeTree(dir);
    process.once("exit", cleanup);
    try {
      return await fn(dir);
    } finally {
      process.removeListener("exit", cleanup);
      try {
        cleanup();
      } catch {
        /* swept by the next session */
      }
    }
  }

  /** End of session: abandon unfinished uploads, put new names on disk, remove our temporary area. */
  close(): void {
    for (const up of this.uploads) up.abort();
    this.quota.close();
    this.syncDirs();
    this.rules.release();
    this.ownFiles.close();
    this.tmp.close();
    closeQuietly(this.rootFd);
  }
}
