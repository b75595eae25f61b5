// What the remote shell used to do for `scp -f 'dir/*.gpg'`: expand *, ? and […] — here inside the
// root only, one path component at a time through the vault (so a symbolic link is never
// entered), with minimatch stripped down to those three: no globstar, no extglob, no braces, and
// a leading dot matched only by a pattern that spells it out.
import { Minimatch } from "minimatch";
import { VbError } from "../errors.js";
import { vpath, type VPath } from "../vault/paths.js";
import type { Vault } from "../vault/vault.js";

const MAGIC = /[*?[]/;
const OPTIONS = { dot: false, noglobstar: true, noext: true, nobrace: true, nocomment: true, nonegate: true } as const;
export const MAX_MATCHES = 100_000;

/** C-locale order (bytes of the UTF-8 encoding), what `LC_ALL=C ls` and sh's globbing give. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function existing(vault: Vault, v: VPath): boolean {
  try {
    return vault.exists(v);
  } catch {
    return false; // crosses a symbolic link, or not a directory on the way: not a match
  }
}

/**
 * The paths a pattern names, sorted. A path without wildcards (or one that exists exactly as
 * written, since quoting is lost by the time we see the words) is returned as it is; a pattern
 * that matches nothing too, as sh does, so the error names what the client asked for.
 */
export function expand(vault: Vault, pattern: string): VPath[] {
  const literal = vault.resolve(pattern); // confinement: throws OUTSIDE_ROOT
  if (!MAGIC.test(pattern) || existing(vault, literal)) return [literal];
  let found: VPath[] = [vpath([])];
  for (const comp of literal.comps) {
    const next: VPath[] = [];
    const mm = MAGIC.test(comp) ? new Minimatch(comp, OPTIONS) : undefined;
    for (const dir of found) {
      if (!mm) {
        next.push(vpath([...dir.comps, comp]));
        continue;
      }
      try {
        for (const batch of vault.list(dir))
          for (const e of batch) if (mm.match(e.name)) next.push(vpath([...dir.comps, e.name]));
      } catch {
        continue; // not a directory we may enter: no match there, as in glob(3)
      }
      if (next.length > MAX_MATCHES) throw new VbError("QUOTA", `'${pattern}': more than ${MAX_MATCHES} matches`);
    }
    found = next;
  }
  const hits = found.filter((v) => existing(vault, v)).sort((a, b) => byteOrder(a.display, b.display));
  return hits.length ? hits : [literal];
}
