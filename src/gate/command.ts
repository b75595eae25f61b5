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

// Characters whose meaning in sh differs from shell-quote's parse (or that sh would expand).
const FORBIDDEN_IN_WORD = /[$`#~{}]/;

function deny(message: string): never {
  throw new VbError("NOT_ALLOWED", message);
}

export function splitWords(raw: string): string[] {
  if (Buffer.byteLength(raw) > MAX_COMMAND_BYTES) deny(`command longer than ${MAX_COMMAND_BYTES} bytes`);
  // eslint-disable-next-line no-control-regex
  const ctl = /[\u0000-\u001f\u007f]/.exec(raw);
  if (ctl) deny(`control character 0x${ctl[0].charCodeAt(0).toString(16).padStart(2, "0")} in the command (newlines, NUL and tabs are refused)`);
  const words: string[] = [];
  for (const tok of parse(raw, (key) => `$${key}`)) {
    if (typeof tok === "string") {
      if (FORBIDDEN_IN_WORD.test(tok)) deny(`shell syntax in '${tok}' ($, \`, #, ~, { and } are refused)`);
      words.push(tok);
    } else if ("op" in tok && tok.op === "glob") {
      // An unquoted wildcard: only scp -f gives it meaning (it expands it inside the root itself).
      if (FORBIDDEN_IN_WORD.test(tok.pattern)) deny(`shell syntax in '${tok.pattern}'`);
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
