// Audit fields come from untrusted clients: cap their length and make every control or
// invisible-separator character visible, so one field can never forge or hide a line.
const MAX_FIELD = 1024;
// C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates
// (a name can otherwise display reversed), zero-width characters and the BOM.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

function escape(c: string): string {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** Cut to at most `max` UTF-16 units, never inside a surrogate pair or an escape written above. */
function cap(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  end -= /\\(?:x[0-9a-f]?|u[0-9a-f]{0,3})?$/.exec(s.slice(Math.max(0, end - 5), end))?.[0].length ?? 0;
  return `${s.slice(0, end)}…(+${s.length - end})`;
}

export function cleanString(s: string, max = MAX_FIELD): string {
  return cap(s.replace(UNSAFE, escape), max);
}

/** Bytes that may not be UTF-8 (client paths): valid UTF-8 as text, anything else as hex escapes. */
export function cleanBytes(b: Buffer, max = MAX_FIELD): string {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(b);
  if (!text.includes("\ufffd")) return cleanString(text, max);
  let out = "";
  for (const byte of b.subarray(0, max)) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : escape(String.fromCharCode(byte));
  }
  return cap(out, max + 16);
}

export function cleanValue(v: unknown, depth = 0): unknown {
  if (typeof v === "string") return cleanString(v);
  if (Buffer.isBuffer(v)) return cleanBytes(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return v;
  if (typeof v === "bigint") return v.toString();
  if (depth > 3) return "[nested]";
  if (Array.isArray(v)) return v.slice(0, 64).map((x) => cleanValue(x, depth + 1));
  if (typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>).slice(0, 64)) out[cleanString(k, 64)] = cleanValue(x, depth + 1);
    return out;
  }
  return cleanString(String(v));
}

/**
 * Text for root's terminal (prune, seal, check, audit, verify): every control or invisible character
 * made visible as in the audit log, so a file name can neither move the cursor, rewrite a line (CR),
 * send an escape sequence nor display reversed. Nothing is cut: the admin sees the whole name.
 */
export function visible(s: string): string {
  return s.replace(UNSAFE, escape);
}

// JSON.stringify escapes C0 in strings; a raw newline left is the indentation's own.
const UNSAFE_IN_JSON = /[\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/** Lines for root's terminal: each line made visible(), the line breaks kept. */
export function visibleLines(text: string): string {
  return text.split("\n").map(visible).join("\n");
}

/**
 * The one way root's commands print (prune, seal, check, audit, verify): text, line by line, made
 * visible. Names inserted into the text should go through visible() too, so that a newline in a
 * name cannot pass for a line of our own.
 */
export function say(text: string, to: "out" | "err" = "out"): void {
  (to === "out" ? process.stdout : process.stderr).write(visibleLines(text) + "\n");
}

/** JSON for a terminal: what JSON.stringify leaves raw (DEL, C1, separators, bidi) as \u escapes, still valid JSON. */
export function visibleJson(v: unknown, indent?: number): string {
  return JSON.stringify(v, null, indent).replace(UNSAFE_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
