// Client path -> components below the root. Pure and lexical: it is exact because the vault
// never follows a symbolic link, so '..' means the same here as in the kernel.
import { VbError } from "../errors.js";

export const MAX_PATH_BYTES = 4096;
export const MAX_NAME_BYTES = 255;
export const MAX_DEPTH = 128;

export interface VPath {
  /** Components below the root; [] is the root itself. */
  readonly comps: readonly string[];
  /** How to name it in messages and the audit log: relative to the root, '.' for the root. */
  readonly display: string;
}

export function vpath(comps: readonly string[]): VPath {
  return { comps, display: comps.length ? comps.join("/") : "." };
}

function split(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

/** Normalise an absolute path lexically; null if '..' would climb above '/'. */
function normalize(abs: string): string[] {
  const out: string[] = [];
  for (const c of split(abs)) {
    if (c === "..") out.pop();
    else out.push(c);
  }
  return out;
}

export function checkName(name: string, shown = name): void {
  if (name.includes("\0")) throw new VbError("BAD_REQUEST", `'${shown}': a name must not contain NUL`);
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new VbError("BAD_REQUEST", `'${shown.slice(0, 64)}…': a name is limited to ${MAX_NAME_BYTES} bytes`);
}

export class Confiner {
  private readonly roots: string[][];
  constructor(
    /** The root as the client knows it (configured) and as the kernel does (realpath). */
    rootPaths: string[],
  ) {
    this.roots = [...new Set(rootPaths)].map(normalize);
  }

  get realRoot(): string {
    return "/" + this.roots[this.roots.length - 1]!.join("/");
  }

  private absComps(p: string): string[] {
    if (p.includes("\0")) throw new VbError("BAD_REQUEST", "a path must not contain NUL");
    if (Buffer.byteLength(p) > MAX_PATH_BYTES) throw new VbError("BAD_REQUEST", `a path is limited to ${MAX_PATH_BYTES} bytes`);
    const raw = split(p);
    if (raw.length > MAX_DEPTH * 2) throw new VbError("BAD_REQUEST", `a path is limited to ${MAX_DEPTH} components`);
    if (p.startsWith("/")) return normalize(p);
    // Relative: against the root; '..' may not climb out of it even temporarily.
    const out: string[] = [];
    for (const c of raw) {
      if (c === "..") {
        if (out.length === 0) throw new VbError("OUTSIDE_ROOT", `'${p}': outside the backup root`);
        out.pop();
      } else out.push(c);
    }
    return [...this.roots[this.roots.length - 1]!, ...out];
  }

  /** The components below the root, or OUTSIDE_ROOT. */
  confine(p: string): VPath {
    const abs = this.absComps(p);
    for (const root of this.roots) {
      if (abs.length >= root.length && root.every((c, i) => abs[i] === c)) {
        const comps = abs.slice(root.length);
        if (comps.length > MAX_DEPTH) throw new VbError("BAD_REQUEST", `a path is limited to ${MAX_DEPTH} components`);
        comps.forEach((c) => checkName(c));
        return vpath(comps);
      }
    }
    throw new VbError("OUTSIDE_ROOT", `'${p}': outside the backup root`);
  }

  /** True for '/' and every directory above the root (SFTP clients walk down through them). */
  isAncestor(p: string): boolean {
    let abs: string[];
    try {
      abs = this.absComps(p);
    } catch {
      return false;
    }
    return this.roots.some((root) => abs.length < root.length && abs.every((c, i) => root[i] === c));
  }

  /** Absolute path as the kernel sees it, for replies such as SFTP REALPATH. */
  absolute(v: VPath): string {
    return [this.realRoot === "/" ? "" : this.realRoot, ...v.comps].join("/") || "/";
  }
}
