// Where a client path lands: below the root (a VPath the vault works on), or on one of the root's
// ancestors, which clients such as paramiko walk down through and which we describe but never open.
import path from "node:path";
import { VbError } from "../errors.js";
import type { VPath } from "../vault/paths.js";
import type { Vault } from "../vault/vault.js";

export type Place = { v: VPath; above?: undefined } | { above: string; v?: undefined };

export function place(vault: Vault, p: string): Place {
  if (vault.confiner.isAncestor(p)) return { above: path.posix.normalize(p).replace(/(.)\/+$/, "$1") };
  return { v: vault.resolve(p) };
}

/** A path that must lie below the root: the ancestors may be looked at, not opened or changed. */
export function inside(vault: Vault, p: string): VPath {
  const pl = place(vault, p);
  if (pl.above !== undefined) throw new VbError("OUTSIDE_ROOT", `'${pl.above}': outside the backup root`);
  return pl.v;
}

/** The absolute path a client is told (REALPATH and friends). */
export function absolute(vault: Vault, pl: Place): string {
  return pl.above ?? vault.confiner.absolute(pl.v);
}

/** Attributes reported for an ancestor of the root: a plain directory, nothing of the real one. */
export const ANCESTOR_ATTRS = { size: 0, uid: 0, gid: 0, perm: 0o040755, atime: 0, mtime: 0 } as const;
