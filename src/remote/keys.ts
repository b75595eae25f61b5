// authorized_keys lines: reading the key an administrator hands us, writing the gate's line, and
// judging every line already there. sshd runs `command=` through the account's shell, so the
// paths in it are limited to characters no shell treats specially.
import { VbError } from "../errors.js";

const KEY_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);
const BLOB = /^[A-Za-z0-9+/]+={0,3}$/;
export const SAFE_PATH = /^\/[A-Za-z0-9._/@+-]+$/;
const SAFE_FROM = /^[A-Za-z0-9.:*?!/,_-]{1,512}$/;

/** The options `restrict` stands for in the older spelling (OpenSSH < 7.2). */
export const OLD_RESTRICTIONS = ["no-pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding"];
/** Options that switch back on what `restrict` turned off. */
export const UNDOES_RESTRICT = ["pty", "port-forwarding", "agent-forwarding", "x11-forwarding", "user-rc", "environment", "permitopen", "permitlisten", "tunnel"];

export interface PublicKey {
  type: string;
  blob: string;
  comment: string;
}

export interface KeyLine extends PublicKey {
  /** Option names in lower case, with their value (unquoted) or true. */
  options: [string, string | true][];
}

function optionsEnd(line: string): number {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "\\" && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && (c === " " || c === "\t")) return i;
  }
  return line.length;
}

function parseOptions(text: string): [string, string | true][] {
  const out: [string, string | true][] = [];
  for (const m of text.matchAll(/([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?(?:,|$)/g)) {
    out.push([m[1]!.toLowerCase(), m[2] === undefined ? true : m[2].replace(/\\(.)/g, "$1")]);
  }
  return out;
}

function parseKey(words: string[]): PublicKey | null {
  const [type, blob, ...rest] = words;
  if (!type || !KEY_TYPES.has(type) || !blob || !BLOB.test(blob)) return null;
  return { type, blob, comment: rest.join(" ") };
}

/** One line of authorized_keys; null for blank lines and comments; {bad} for what sshd would skip. */
export function parseKeyLine(raw: string): KeyLine | null | { bad: string } {
  const line = raw.trim();
  if (!line || line.startsWith("#")) return null;
  const plain = parseKey(line.split(/\s+/));
  if (plain) return { ...plain, options: [] };
  const end = optionsEnd(line);
  const key = parseKey(line.slice(end).trim().split(/\s+/));
  if (!key) return { bad: line.slice(0, 80) };
  return { ...key, options: parseOptions(line.slice(0, end)) };
}

/** The key an administrator gives with --key: exactly one public key, without options. */
export function readPublicKey(text: string, file: string): PublicKey {
  // The one mistake worth its own words: the secret half, which must never leave SOURCE.
  if (/-----BEGIN (OPENSSH |RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----/.test(text))
    throw new VbError("BAD_REQUEST", `--key ${file}: this is a PRIVATE key; give the public one (${file.replace(/\.pub$/, "")}.pub, made beside it by ssh-keygen), and keep the private key on SOURCE`);
  const lines = text.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
  if (lines.length !== 1) throw new VbError("BAD_REQUEST", `${file}: expected exactly one public key line, found ${lines.length}`);
  const key = parseKey(lines[0]!.trim().split(/\s+/));
  if (!key) throw new VbError("BAD_REQUEST", `${file}: not an OpenSSH public key (type base64 [comment]) of a known type, or it carries options`);
  return { ...key, comment: key.comment.replace(/[^A-Za-z0-9 ._@:+-]/g, "_").slice(0, 128) };
}

export function checkFrom(pattern: string): string {
  if (!SAFE_FROM.test(pattern)) throw new VbError("BAD_REQUEST", `--from '${pattern.slice(0, 64)}': only host patterns and addresses (letters, digits, . : * ? ! / , _ -)`);
  return pattern;
}

export function gateLine(bin: string, config: string, key: PublicKey, from?: string): string {
  for (const p of [bin, config])
    if (!SAFE_PATH.test(p)) throw new VbError("BAD_REQUEST", `${p}: paths in authorized_keys are limited to letters, digits and . _ / @ + -`);
  const opts = [`command="${bin} --config ${config}"`, "restrict", ...(from ? [`from="${from}"`] : [])];
  return `${opts.join(",")} ${key.type} ${key.blob}${key.comment ? " " + key.comment : ""}`;
}

/** Put `line` in place of any line with the same key, or at the end; every other line is kept. */
export function mergeKeys(existing: string, line: string, key: PublicKey): { content: string; replaced: number } {
  let replaced = 0;
  const out: string[] = [];
  for (const raw of existing.split("\n")) {
    const k = parseKeyLine(raw);
    if (k && !("bad" in k) && k.blob === key.blob) {
      if (replaced++ === 0) out.push(line);
      continue;
    }
    out.push(raw);
  }
  while (out.length && out[out.length - 1] === "") out.pop();
  if (!replaced) out.push(line);
  return { content: out.join("\n") + "\n", replaced };
}

export interface Gate {
  bin: string;
  config: string;
}

/** The gate a line forces, if it forces ours: command="<abs>/bin/validate-backup --config <abs>". */
export function gateOf(k: KeyLine): Gate | null {
  const cmd = k.options.find(([n]) => n === "command")?.[1];
  if (typeof cmd !== "string") return null;
  const m = /^(\/\S+\/bin\/validate-backup) --config (\/\S+)$/.exec(cmd);
  return m ? { bin: m[1]!, config: m[2]! } : null;
}

/** What is wrong with a line, as sentences; [] when it forces our gate and is restricted. */
export function lineFaults(k: KeyLine): string[] {
  const names = new Set(k.options.map(([n]) => n));
  const faults: string[] = [];
  if (!gateOf(k)) faults.push("does not force validate-backup (command=\"…/bin/validate-backup --config …\"): this key gets whatever sshd allows");
  if (!names.has("restrict") && !OLD_RESTRICTIONS.every((o) => names.has(o)))
    faults.push("lacks 'restrict' (or no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding): forwarding and a terminal stay open");
  const undo = UNDOES_RESTRICT.filter((o) => names.has(o));
  if (undo.length) faults.push(`carries ${undo.join(", ")}, which re-open what 'restrict' closes`);
  return faults;
}
