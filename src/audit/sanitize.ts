// Audit fields come from untrusted clients: cap their length and make every control or
// invisible-separator character visible, so one field can never forge or hide a line.
const MAX_FIELD = 1024;
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function cleanString(s: string, max = MAX_FIELD): string {
  const escaped = s.replace(UNSAFE, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return escaped.length > max ? `${escaped.slice(0, max)}…(+${escaped.length - max})` : escaped;
}

/** Bytes that may not be UTF-8 (client paths): valid UTF-8 as text, anything else as hex escapes. */
export function cleanBytes(b: Buffer, max = MAX_FIELD): string {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(b);
  if (!text.includes("\ufffd")) return cleanString(text, max);
  let out = "";
  for (const byte of b.subarray(0, max)) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return cleanString(out, max + 16);
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
