// The versions area, state/versions/<key>/<n>: when the replace policy lets duplicity send a
// volume again, the bytes it replaces are hard-linked here first, so a replacement never destroys
// anything. At most MAX_VERSIONS per name; then replacing is refused, keeping the oldest bytes
// (the ones an attacker would most want gone). prune removes them with their chain. Sending the
// stored bytes again is no replacement and keeps no version (sameBytes): else the key could burn
// the slots with harmless resends, and a genuine resume would then be refused.
import fs from "node:fs";
import path from "node:path";
import { nodeCrypto } from "../lazy.js";
import { VbError } from "../errors.js";
import { at, inodeKey, closeQuietly, READ_FLAGS } from "../fsat.js";

export const VERSIONS_DIR = "versions";
export const MAX_VERSIONS = 3;

/** The directory of one name's versions: a hash, because a path below the root may be long. */
export function versionKey(rel: string): string {
  return nodeCrypto().createHash("sha256").update(rel).digest("hex").slice(0, 32);
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

const CHUNK = 1 << 20;

/**
 * Does the stored file at (dirFd, name), still the inode `expect`, hold exactly the bytes of the
 * file at `src`? Reads both only when their sizes agree, and stops at the first difference.
 */
export function sameBytes(dirFd: number, name: string, expect: string, src: string): boolean {
  let a: number | undefined;
  let b: number | undefined;
  try {
    a = fs.openSync(at(dirFd, name), READ_FLAGS);
    b = fs.openSync(src, READ_FLAGS);
    const [sa, sb] = [fs.fstatSync(a), fs.fstatSync(b)];
    if (inodeKey(sa) !== expect || !sa.isFile() || !sb.isFile() || sa.size !== sb.size) return false;
    const [ba, bb] = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    for (let pos = 0; pos < sa.size; ) {
      const n = fs.readSync(a, ba, 0, CHUNK, pos);
      if (n === 0 || fs.readSync(b, bb, 0, n, pos) !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
      pos += n;
    }
    return true;
  } catch {
    return false; // not comparable: treated as a real replacement, with all its checks
  } finally {
    closeQuietly(a);
    closeQuietly(b);
  }
}
