// The versions area, state/versions/<key>/<n>: when the replace policy lets duplicity send a
// volume again, the bytes it replaces are hard-linked here first, so a replacement never destroys
// anything. At most MAX_VERSIONS per name; then replacing is refused, keeping the oldest bytes
// (the ones an attacker would most want gone). prune removes them with their chain.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { VbError } from "../errors.js";
import { at, inodeKey } from "../fsat.js";

export const VERSIONS_DIR = "versions";
export const MAX_VERSIONS = 3;

/** The directory of one name's versions: a hash, because a path below the root may be long. */
export function versionKey(rel: string): string {
  return crypto.createHash("sha256").update(rel).digest("hex").slice(0, 32);
}

/**
 * Link the file at (dirFd, name), which must still be `expect`, into the versions of `rel`.
 * Returns the version number it got.
 */
export function keepVersion(state: string, rel: string, dirFd: number, name: string, expect: fs.Stats): number {
  const dir = path.join(state, VERSIONS_DIR, versionKey(rel));
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    // For a person looking: which file these are versions of.
    fs.writeFileSync(path.join(dir, "path"), rel + "\n", { flag: "wx", mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  for (let n = 1; n <= MAX_VERSIONS; n++) {
    const dest = path.join(dir, String(n));
    try {
      fs.linkSync(at(dirFd, name), dest);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") continue;
      throw e;
    }
    if (inodeKey(fs.lstatSync(dest)) !== inodeKey(expect)) {
      fs.unlinkSync(dest);
      throw new VbError("EXISTS", `append-only: '${rel}' changed meanwhile and was not replaced`);
    }
    return n;
  }
  throw new VbError("QUOTA", `append-only: '${rel}' was already replaced ${MAX_VERSIONS} times; its old versions are kept and it cannot be replaced again`);
}
