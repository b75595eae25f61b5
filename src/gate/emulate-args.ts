// Argument tables of the few commands duplicity's paramiko+scp backend runs (mkdir -p, ls -1).
// We answer them ourselves: no shell, no program. Only the listed flags are accepted, and since
// GNU tools also take options after operands, a word starting with '-' is an option anywhere
// unless it comes after '--'.
import { VbError } from "../errors.js";
import { checkInsideRoot } from "./scp-args.js";

export interface Parsed<F extends string> {
  flags: Set<F>;
  operands: string[];
}

export function parseWords<F extends string>(
  program: string,
  args: readonly string[],
  flags: Readonly<Record<string, F>>,
  operands: { min: number; max: number },
): Parsed<F> {
  const out: Parsed<F> = { flags: new Set(), operands: [] };
  let endOfOptions = false;
  for (const a of args) {
    if (!endOfOptions && a === "--") endOfOptions = true;
    else if (!endOfOptions && a.startsWith("-") && a !== "-") {
      const f = Object.hasOwn(flags, a) ? flags[a] : undefined;
      if (f === undefined) {
        const allowed = Object.keys(flags).join(", ") || "none";
        throw new VbError("NOT_ALLOWED", `${program}: option '${a.slice(0, 32)}' is not allowed (allowed: ${allowed})`);
      }
      out.flags.add(f);
    } else out.operands.push(a);
  }
  const n = out.operands.length;
  if (n < operands.min || n > operands.max) {
    const want = operands.min === operands.max ? `exactly ${operands.min}` : `${operands.min} to ${operands.max}`;
    throw new VbError("NOT_ALLOWED", `${program}: takes ${want} path(s), got ${n}`);
  }
  if (out.operands.some((o) => o === "")) throw new VbError("NOT_ALLOWED", `${program}: empty path`);
  return out;
}

export interface MkdirRequest {
  parents: boolean;
  dir: string;
}

export function parseMkdirArgs(args: readonly string[], root: string): MkdirRequest {
  const p = parseWords("mkdir", args, { "-p": "parents", "--parents": "parents" }, { min: 1, max: 1 });
  checkInsideRoot(p.operands, root);
  return { parents: p.flags.has("parents"), dir: p.operands[0]! };
}

export interface LsRequest {
  path: string;
}

export function parseLsArgs(args: readonly string[], root: string): LsRequest {
  // -1 only changes the layout on a terminal; to a pipe ls prints one name per line anyway.
  const p = parseWords("ls", args, { "-1": "one" }, { min: 0, max: 1 });
  checkInsideRoot(p.operands, root);
  return { path: p.operands[0] ?? "." };
}
