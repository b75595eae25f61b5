// SETSTAT and FSETSTAT. On what this session created: permissions (the vault masks them) and
// times, and a size only when it equals what was written (scp sends one). On a file this key
// published on another of its sessions within the hour, the times alone (rclone's pool sets them
// there; the rule is the vault's, vault/recent.ts). Everything else is refused.
import { VbError, type Code } from "../errors.js";
import type { Vault } from "../vault/vault.js";
import type { VPath } from "../vault/paths.js";
import type { Upload } from "../vault/upload.js";
import type { Attrs } from "./attrs.js";

// Fields no request may set, whatever the object.
const NEVER: ReadonlyArray<{ present: (a: Attrs) => boolean; code: Code; why: (shown: string) => string }> = [
  { present: (a) => a.uid !== undefined, code: "IMMUTABLE", why: (s) => `append-only: the owner of '${s}' cannot be changed` },
  { present: (a) => (a.extended?.length ?? 0) > 0, code: "NOT_ALLOWED", why: (s) => `'${s}': extended attributes are not stored` },
];

function checkNever(a: Attrs, shown: string): void {
  for (const rule of NEVER) if (rule.present(a)) throw new VbError(rule.code, rule.why(shown));
}

/** An upload in progress (FSETSTAT on its handle): kept for commit. */
export function setUploadAttrs(up: Upload, a: Attrs): void {
  checkNever(a, up.v.display);
  up.setAttrs({ size: a.size, mode: a.perm, atime: a.atime, mtime: a.mtime });
}

/** Something already in the tree: the vault allows it only on what this session created. */
export function setPathAttrs(vault: Vault, v: VPath, a: Attrs): void {
  checkNever(a, v.display);
  if (a.size !== undefined) {
    const st = vault.lstat(v);
    if (!st.isFile() || st.size !== a.size)
      throw new VbError("IMMUTABLE", `append-only: '${v.display}' cannot be truncated or extended (size ${a.size} requested, ${st.size} stored)`);
  }
  vault.setAttrs(v, { mode: a.perm, atime: a.atime, mtime: a.mtime });
}
