// Where a text stops being JSON, for a person: JSON.parse's own messages carry a position only
// sometimes, and others quote the text itself (a config may be the admin's secret). One small
// scan, run only after JSON.parse has refused, names the line, the column and what was expected.

export interface JsonFault {
  line: number;
  column: number;
  why: string;
}

const WS = new Set([" ", "\t", "\n", "\r"]);
// Deep enough for any config; a 64 KiB text of '[' would otherwise overflow the stack.
const MAX_DEPTH = 256;
const ESCAPES = new Set(['"', "\\", "/", "b", "f", "n", "r", "t"]);

class Fault extends Error {
  constructor(
    readonly at: number,
    why: string,
  ) {
    super(why);
  }
}

/** The first syntax fault of text, or null when it is JSON. */
export function jsonFault(text: string): JsonFault | null {
  let i = 0;
  let depth = 0;
  const fail = (why: string, at = i): never => {
    throw new Fault(at, why);
  };
  const ws = () => {
    while (i < text.length && WS.has(text[i]!)) i++;
  };
  const found = () => (i >= text.length ? "the end of the text" : /^[\x21-\x7e]$/.test(text[i]!) ? `'${text[i]}'` : `character U+${text.codePointAt(i)!.toString(16).toUpperCase().padStart(4, "0")}`);
  const str = () => {
    const start = i++;
    for (;;) {
      if (i >= text.length) fail("a string that is never closed (a missing '\"')", start);
      const c = text[i]!;
      if (c === '"') return void i++;
      if (c === "\\") {
        const e = text[i + 1];
        if (e === "u") {
          if (!/^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6))) fail("a \\u escape needs four hex digits");
          i += 6;
        } else if (e !== undefined && ESCAPES.has(e)) i += 2;
        else fail("an unknown escape in a string (a '\\' to be written as '\\\\'?)");
        continue;
      }
      if (c.charCodeAt(0) < 0x20) fail(c === "\n" ? "a line break inside a string (a missing '\"')" : "a control character inside a string");
      i++;
    }
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail(`expected a number, found ${found()}`);
    i += m![0].length;
    if (/^[0-9]/.test(text[i] ?? "")) fail("a number with a leading zero");
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if ((c === "{" || c === "[") && ++depth > MAX_DEPTH) fail(`nested more than ${MAX_DEPTH} deep`);
    if (c === "{") return obj();
    if (c === "[") return arr();
    if (c === '"') return str();
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return num();
    for (const w of ["true", "false", "null"])
      if (text.startsWith(w, i)) {
        i += w.length;
        return;
      }
    if (c === "'") fail("expected a value; strings take double quotes (\"), not '");
    fail(`expected a value (a string, number, object, array, true, false or null), found ${found()}`);
  };
  // An object's or array's members after its opening bracket, through the closing one.
  const members = (close: "}" | "]", member: () => void, hint = "") => {
    i++;
    ws();
    if (text[i] === close) return void (i++, depth--);
    for (;;) {
      ws();
      member();
      ws();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === close) return void (i++, depth--);
      fail(`expected ',' or '${close}' after a value, found ${found()}${hint}`);
    }
  };
  const obj = () =>
    members(
      "}",
      () => {
        if (text[i] !== '"') fail(text[i] === "}" ? "expected a key after ',' (a trailing comma?)" : text[i] === "'" ? "expected a key in double quotes (\"), not '" : `expected a key in double quotes, found ${found()}`);
        str();
        ws();
        if (text[i] !== ":") fail(`expected ':' after the key, found ${found()}`);
        i++;
        value();
      },
      " (a missing comma?)",
    );
  const arr = () =>
    members("]", () => {
      if (text[i] === "]") fail("expected a value after ',' (a trailing comma?)");
      value();
    });
  try {
    // JSON.parse refuses a byte-order mark: say so.
    if (text.charCodeAt(0) === 0xfeff) fail("a byte-order mark (U+FEFF) before the JSON; save the file without it", 0);
    value();
    ws();
    if (i < text.length) fail(`expected the end of the text after the value, found ${found()}`);
    return null;
  } catch (e) {
    if (!(e instanceof Fault)) throw e;
    const before = text.slice(0, e.at);
    const nl = before.lastIndexOf("\n");
    return { line: before.split("\n").length, column: e.at - nl, why: e.message };
  }
}
