// restic's lock files, the one kind of file a key may remove that another of its sessions stored
// (issue 17, item 6). A restic run writes a lock into its repository's locks/ and removes it at the
// end; a run killed meanwhile leaves it, and restic's exclusive commands (check, prune) then refuse
// to run until `restic unlock` removes it. Locks hold no backup data (rest-server's append-only
// mode lets them be removed too), so refusing that removal only made every killed backup a job for
// root. Pure: what lstat and a hash say in, a verdict out (the vault and seal look, on descriptors).
//
// restic's repository layout (its design document): a `config` file beside the directories data/,
// index/, keys/, locks/ and snapshots/; every file but config is named by the SHA-256 of its bytes,
// in 64 lowercase hexadecimal digits. A lock is such a file directly in locks/. The name being its
// own hash is what keeps the rule to locks: a file of another tree placed under a directory called
// locks/, with the markers added beside it by the key, is still no lock unless its name is its hash.
import type fs from "node:fs";

export const LOCKS_DIR = "locks";
const LOCK_NAME = /^[0-9a-f]{64}$/;
/** A restic lock is a few hundred bytes (a JSON object, encrypted); nothing larger is hashed. */
export const MAX_LOCK_BYTES = 64 * 1024;

/** What a directory holds to be taken for a restic repository: each name, and what lstat must show. */
const REPOSITORY: ReadonlyArray<readonly [name: string, is: (st: fs.Stats) => boolean]> = [
  ["config", (st) => st.isFile()],
  ["data", (st) => st.isDirectory()],
  ["index", (st) => st.isDirectory()],
  ["keys", (st) => st.isDirectory()],
  ["snapshots", (st) => st.isDirectory()],
];

/** What the rule looks at: a name in its directory, that directory's parent, and the file. */
export interface LockCandidate {
  name: string;
  /** The name of the directory the file is in. */
  dir: string;
  /** lstat of the file. */
  st: fs.Stats;
  /** lstat of a name in the directory above (the repository), or null if there is none. */
  repo: (name: string) => fs.Stats | null;
  /** Who may remove it (the key's account), for the vault; seal, as root, asks without. */
  uid?: number;
  /** The SHA-256 of the file's bytes (asked last: it reads the file). */
  sha256: () => string;
}

/** The rule, row by row: the first row whose test fails says why the file is not a restic lock. */
const RULE: ReadonlyArray<readonly [why: string, holds: (c: LockCandidate) => boolean]> = [
  ["it is not named as restic names lock files (64 lowercase hexadecimal digits)", (c) => LOCK_NAME.test(c.name)],
  [
    "its directory is not the locks/ directory of a restic repository (config, data/, index/, keys/ and snapshots/ beside it)",
    (c) => c.dir === LOCKS_DIR && REPOSITORY.every(([n, is]) => {
      const st = c.repo(n);
      return st !== null && is(st);
    }),
  ],
  ["it is not a regular file with a single link", (c) => c.st.isFile() && c.st.nlink === 1],
  // Also what keeps the lock of a prune run by root on REMOTE (or by another account) from being
  // removed under it, which would let a backup run into the middle of that prune.
  ["it is not this account's (sealed, or another account's, such as root's own restic prune)", (c) => c.uid === undefined || c.st.uid === c.uid],
  [`it is larger than any lock restic writes (${MAX_LOCK_BYTES} bytes)`, (c) => c.st.size <= MAX_LOCK_BYTES],
  ["its name is not the SHA-256 of its bytes, as every restic lock's is", (c) => c.sha256() === c.name],
];

/** Why this file is not a restic lock, or undefined if it is one. */
export function whyNotLock(c: LockCandidate): string | undefined {
  return RULE.find(([, holds]) => !holds(c))?.[0];
}

/**
 * Could the path (its components) be a lock, by its shape alone? For records that outlive the
 * file (arrivals): a lock's arrival is never taken for a backup's.
 */
export function lockShaped(comps: readonly string[]): boolean {
  return comps.length >= 2 && comps[comps.length - 2] === LOCKS_DIR && LOCK_NAME.test(comps[comps.length - 1]!);
}
