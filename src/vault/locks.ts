// The vault's side of restic's lock rule (profile/restic.ts): the rule asked about a file in an
// open directory, whose parent (the repository) is open too, never by a path. The file is hashed
// through a descriptor opened without following a link and checked to be the file lstat saw.
import fs from "node:fs";
import { at, closeQuietly, lstatAtOrNull, READ_FLAGS } from "../fsat.js";
import { whyNotLock } from "../profile/restic.js";
import { sameFile } from "./own.js";
import { sha256OfFd } from "./hasher.js";

/**
 * Why (dirFd, name), lstat `st`, is not a restic lock (or, given `uid`, not one that account may
 * remove), or undefined; dirFd's own name is `dir`, its parent repoFd.
 */
export function whyNotLockAt(repoFd: number, dir: string, dirFd: number, name: string, st: fs.Stats, uid?: number): string | undefined {
  return whyNotLock({ name, dir, st, uid, repo: (n) => lstatAtOrNull(repoFd, n), sha256: () => hashOf(dirFd, name, st) });
}

function hashOf(dirFd: number, name: string, st: fs.Stats): string {
  // O_NOCTTY: seal asks as root, and a terminal swapped in must never become ours.
  const fd = fs.openSync(at(dirFd, name), READ_FLAGS | fs.constants.O_NOCTTY);
  try {
    const now = fs.fstatSync(fd);
    // Another file under the name by now: no hash of it can be its name's (the rule says no).
    if (!sameFile(now, st)) return "";
    return sha256OfFd(fd, now.size);
  } finally {
    closeQuietly(fd);
  }
}
