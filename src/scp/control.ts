// Control lines of the legacy scp protocol (what OpenSSH's sink reads), parsed strictly. Pure.
//   C<mode> <size> <name>   a file follows: <size> bytes, then one status byte
//   D<mode> 0 <name>        a directory begins (its entries follow, then E)
//   E                       the current directory ends
//   T<mtime> <usec> <atime> <usec>   times for the next C or D
//   \x01text / \x02text     the peer reports a warning / gives up
// A malformed line is fatal (the stream cannot be trusted to be in step any more); a bad *name*
// only refuses that entry, which the client then skips.
import { VbError } from "../errors.js";

export type Control =
  | { type: "C" | "D"; mode: number; size: number; name: string; badName?: string }
  | { type: "T"; mtime: number; atime: number }
  | { type: "E" }
  | { type: "message"; fatal: boolean; text: string };

export const MAX_LINE = 4096;

const HEAD = /^([CD])([0-7]{4}) (\d{1,20}) /;
const TIMES = /^T(\d{1,15}) (\d{1,6}) (\d{1,15}) (\d{1,6})$/;

// What a name in a C or D line may not be: it must name one new entry inside the target.
const NAME_RULES: ReadonlyArray<[(n: string) => boolean, string]> = [
  [(n) => n === "", "an empty name"],
  [(n) => n === "." || n === "..", "'.' and '..' are not file names"],
  [(n) => n.includes("/"), "a name must be a single path component (no '/')"],
  [(n) => n.includes("\0"), "a name must not contain NUL"],
  [(n) => n.includes("\ufffd"), "a name must be valid UTF-8"],
];

function screwup(why: string): never {
  throw new VbError("BAD_REQUEST", `protocol error: ${why}`);
}

export function parseControl(line: Buffer): Control {
  const first = line[0];
  if (first === 1 || first === 2) return { type: "message", fatal: first === 2, text: line.subarray(1).toString("utf8") };
  // latin1 maps bytes to characters one to one, so offsets in the text are offsets in the line.
  const text = line.toString("latin1");
  if (text === "E") return { type: "E" };
  if (first === 0x54 /* T */) {
    const m = TIMES.exec(text);
    if (!m || Number(m[2]) > 999999 || Number(m[4]) > 999999) screwup("malformed T line (expected T<mtime> <usec> <atime> <usec>)");
    return { type: "T", mtime: Number(m[1]) + Number(m[2]) / 1e6, atime: Number(m[3]) + Number(m[4]) / 1e6 };
  }
  const m = HEAD.exec(text);
  if (!m) screwup(first === 0x43 || first === 0x44 ? "malformed C or D line (expected C<4 octal digits> <size> <name>)" : "expected a control record (C, D, E or T)");
  const size = Number(m[3]);
  if (!Number.isSafeInteger(size)) screwup("size out of range");
  const nameBytes = line.subarray(m[0].length);
  const name = new TextDecoder("utf-8", { fatal: false }).decode(nameBytes);
  const bad = NAME_RULES.find(([test]) => test(name));
  const c: Control = { type: m[1] as "C" | "D", mode: Number.parseInt(m[2]!, 8), size, name };
  if (bad) c.badName = bad[1];
  return c;
}
