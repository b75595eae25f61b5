// SSH_ORIGINAL_COMMAND -> Request. Pure. Nothing here is ever handed to a shell: the string is
// split into words the way sh would, and anything sh would treat specially is refused, so the
// words we act on are exactly the words a shell would have passed.
import { parse } from "shell-quote";
import { VbError } from "../errors.js";

export const MAX_COMMAND_BYTES = 8192;

export type Request =
  | { kind: "true" }
  | { kind: "sftp"; program: string; args: string[] }
  | { kind: "rsync"; args: string[] }
  | { kind: "scp"; args: string[] }
  | { kind: "mkdir"; args: string[] }
  | { kind: "ls"; args: string[] }
  | { kind: "rm"; args: string[] };

export type RequestKind = Request["kind"];

// The first word decides the kind; nothing else is a program we answer to.
const PROGRAMS: Record<string, RequestKind> = {
  true: "true",
  rsync: "rsync",
  "/usr/lib/openssh/sftp-server": "sftp",
  "/usr/libexec/openssh/sftp-server": "sftp",
  "/usr/libexec/sftp-server": "sftp",
  "internal-sftp": "sftp",
  scp: "scp",
  mkdir: "mkdir",
  ls: "ls",
  rm: "rm",
};

// Characters whose meaning in sh differs from shell-quote's parse (or that sh would expand). They
// are refused in the raw string, before shell-quote sees it: it expands bash's $'…' quoting itself
// (so $'--daemon' or $'\n' would come out as a plain word) and drops a '#' comment silently.
const FORBIDDEN = /[$`#~{}]/;

// Checks on the raw string, each a place where shell-quote and sh would not agree on the words.
const RAW_RULES: ReadonlyArray<[RegExp, (m: string) => string]> = [
  // eslint-disable-next-line no-control-regex
  [/[\u0000-\u001f\u007f]/, (c) => `control character ${hex(c)} in the command (newlines, NUL and tabs are refused)`],
  // process.env decodes the bytes sshd passed as UTF-8; U+FFFD marks bytes that were not.
  [/\ufffd/, () => "the command is not valid UTF-8"],
  // shell-quote splits words at any Unicode space (no-break space, U+2028, U+3000…); sh only at ' '.
  [/(?! )\s/, (c) => `whitespace character ${hex(c)} in the command (only plain spaces separate words)`],
  [FORBIDDEN, (c) => `shell syntax '${c}' is refused ($, \`, #, ~, { and } are never accepted: nothing is passed to a shell)`],
];

function hex(c: string): string {
  return `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

function deny(message: string): never {
  throw new VbError("NOT_ALLOWED", message);
}

/** sh rejects an unterminated quote; shell-quote silently drops the quote character instead. */
function checkQuotes(raw: string): void {
  let quote = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (quote) {
      if (c === quote) quote = "";
      else if (quote === '"' && c === "\\") i++;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "\\") {
      if (i === raw.length - 1) deny("a backslash at the end of the command escapes nothing");
      i++;
    }
  }
  if (quote) deny(`unterminated ${quote === "'" ? "single" : "double"} quote in the command`);
}

export function splitWords(raw: string): string[] {
  if (raw.length > MAX_COMMAND_BYTES || Buffer.byteLength(raw) > MAX_COMMAND_BYTES) deny(`command longer than ${MAX_COMMAND_BYTES} bytes`);
  for (const [rule, why] of RAW_RULES) {
    const m = rule.exec(raw);
    if (m) deny(why(m[0]));
  }
  checkQuotes(raw);
  const words: string[] = [];
  for (const tok of parse(raw, (key) => `$${key}`)) {
    if (typeof tok === "string") {
      // Unreachable after the raw checks; kept so a change in shell-quote cannot open a hole.
      if (FORBIDDEN.test(tok)) deny(`shell syntax in '${tok}' ($, \`, #, ~, { and } are refused)`);
      words.push(tok);
    } else if ("op" in tok && tok.op === "glob") {
      // An unquoted wildcard: only scp -f gives it meaning (it expands it inside the root itself).
      if (FORBIDDEN.test(tok.pattern)) deny(`shell syntax in '${tok.pattern}'`);
      words.push(tok.pattern);
    } else if ("comment" in tok) deny("'#' (a shell comment) is refused");
    else deny(`shell operator '${"op" in tok ? tok.op : "?"}' is refused: one command only, no shell`);
  }
  return words;
}

export function parseCommand(raw: string | undefined): Request {
  if (raw === undefined) deny("no command given: interactive logins and shells are refused");
  const words = splitWords(raw);
  const [program, ...args] = words;
  if (program === undefined) deny("empty command");
  const kind = Object.hasOwn(PROGRAMS, program) ? PROGRAMS[program] : undefined;
  if (!kind) deny(`'${program.slice(0, 64)}' is not allowed: only SFTP, scp and rsync are served`);
  if (kind === "true") {
    if (args.length) deny("'true' takes no arguments");
    return { kind };
  }
  if (kind === "sftp") return { kind, program, args };
  return { kind, args };
}
