// The rsync server command line -> RsyncRequest, or a refusal. Pure. In the style of rrsync: one
// table gives every option a real client sends to a server a class; anything absent is refused.
// What we pass on is rebuilt from the table (canonical `--name=value` words), never the raw words.
import { VbError } from "../errors.js";
import { Confiner, type VPath } from "../vault/paths.js";

/** Which end the server plays: a push makes it the receiver, a pull (--sender) the sender. */
export type Side = "push" | "pull" | "both";

export type OptionClass =
  | { kind: "flag"; side: Side }
  | { kind: "value"; side: Side; pattern: RegExp; check?: (value: string) => string | undefined }
  | { kind: "refuse"; reason: string };

const flag = (side: Side = "both"): OptionClass => ({ kind: "flag", side });
const value = (pattern: RegExp, side: Side = "both", check?: (v: string) => string | undefined): OptionClass => ({ kind: "value", side, pattern, check });
const refuse = (reason: string): OptionClass => ({ kind: "refuse", reason });

// Reasons shared by several options.
const DELETES = "append-only: rsync may not delete anything";
const MOVES = "append-only: files are only ever added whole, never kept partial, moved aside or written in place";
const BASIS = "basis directories are chosen by validate-backup, not by the client";
const LOGS = "rsync may not write log files on this server";
const BATCH = "batch files are not supported";
const DAEMON = "rsync daemon mode is never started";
const FILTERS = "filter, include and exclude rules travel inside the rsync protocol, never on the command line";
const FOLLOWS = "symbolic links are never followed on this server";
const HIDDEN = "options and paths must all be visible on the command line";
const OWNERS = "stored files always belong to the backup account";
const REMOTE = "the server's own options cannot be set by the client";

const NUM = /^\d{1,10}$/;
const SIGNED = /^-?\d{1,10}$/;
const WORD = /^[A-Za-z0-9][A-Za-z0-9,._-]{0,63}$/;
const SIZE = /^\d{1,20}(\.\d{1,6})?([KMGTPkmgtp][Bb]?|[Bb])?([+-]1)?$/;

/**
 * zstd's memory grows with its level (the server's RSS on a pull, measured: level 3 10 MiB, 9 23 MiB,
 * 19 96 MiB, 22 742 MiB, per session); zlib's stays near 7 MiB at any level. The compressor may be
 * negotiated inside the protocol, out of our sight, so one cap serves all of them.
 */
export const MAX_COMPRESS_LEVEL = 9;

function compressLevelCheck(v: string): string | undefined {
  return Number(v) > MAX_COMPRESS_LEVEL ? `--compress-level=${v} is refused: at most ${MAX_COMPRESS_LEVEL} (zstd above that costs the server hundreds of MB per session)` : undefined;
}

function maxDeleteCheck(v: string): string | undefined {
  return Number(v) > 0 ? `append-only: --max-delete=${v} would allow deletions (only values <= 0 are accepted)` : undefined;
}

/** Long options, keyed by name without the dashes. */
export const LONG_OPTIONS: Readonly<Record<string, OptionClass>> = {
  // Sent by clients (rsync options.c server_options) and harmless on either side.
  "block-size": value(NUM),
  bwlimit: value(/^\d{1,10}(\.\d{1,3})?[KMGkmg]?$/),
  "checksum-choice": value(WORD),
  "checksum-seed": value(NUM),
  "compress-choice": value(WORD),
  "compress-level": value(SIGNED, "both", compressLevelCheck),
  info: value(/^[A-Za-z0-9,]{1,200}$/),
  "msgs2stderr": flag(),
  "new-compress": flag(),
  "no-implied-dirs": flag(),
  "no-msgs2stderr": flag(),
  "no-relative": flag(),
  "no-specials": flag(),
  "numeric-ids": flag(),
  "old-compress": flag(),
  "open-noatime": flag(),
  specials: flag(),
  // Accepted, but the session's own --timeout comes last and wins (rsync/run.ts).
  timeout: value(NUM),
  "use-qsort": flag(),
  // Long spellings of allowed letters, for hand-written command lines.
  checksum: flag(),
  compress: flag(),
  dirs: flag(),
  "dry-run": flag(),
  group: flag(),
  links: flag(),
  "one-file-system": flag(),
  owner: flag(),
  perms: flag(),
  recursive: flag(),
  relative: flag(),
  times: flag(),
  verbose: flag(),
  // Only meaningful when the server receives (a push).
  existing: flag("push"),
  fsync: flag("push"),
  "ignore-errors": flag("push"),
  "ignore-existing": flag("push"),
  "log-format": value(/^(%i%I|%i|%o|X)$/, "push"),
  "max-delete": value(SIGNED, "push", maxDeleteCheck),
  "max-size": value(SIZE, "push"),
  "min-size": value(SIZE, "push"),
  mkpath: flag("push"),
  "modify-window": value(SIGNED, "push"),
  "munge-links": flag("push"),
  "no-r": flag("push"),
  "size-only": flag("push"),
  stats: flag("push"),
  // Only meaningful when the server sends (a pull).
  "ignore-missing-args": flag("pull"),
  "list-only": flag("pull"),
  "skip-compress": value(/^[A-Za-z0-9/._-]{1,200}$/, "pull"),
  // --safe-links buys a push nothing (links are never published) and has been the trigger of
  // receiver path-traversal bugs (CVE-2024-12088); on a pull it only leaves links out.
  "safe-links": flag("pull"),

  delete: refuse(DELETES),
  del: refuse(DELETES),
  "delete-before": refuse(DELETES),
  "delete-during": refuse(DELETES),
  "delete-delay": refuse(DELETES),
  "delete-after": refuse(DELETES),
  "delete-excluded": refuse(DELETES),
  "delete-missing-args": refuse(DELETES),
  "remove-source-files": refuse(DELETES),
  "remove-sent-files": refuse(DELETES),
  force: refuse(DELETES),
  backup: refuse(MOVES),
  "backup-dir": refuse(MOVES),
  suffix: refuse(MOVES),
  partial: refuse(MOVES),
  "partial-dir": refuse(MOVES),
  "delay-updates": refuse(MOVES),
  inplace: refuse(MOVES),
  append: refuse(MOVES),
  "append-verify": refuse(MOVES),
  "temp-dir": refuse(MOVES),
  "compare-dest": refuse(BASIS),
  "copy-dest": refuse(BASIS),
  "link-dest": refuse(BASIS),
  "log-file": refuse(LOGS),
  "log-file-format": refuse(LOGS),
  "read-batch": refuse(BATCH),
  "write-batch": refuse(BATCH),
  "only-write-batch": refuse(BATCH),
  daemon: refuse(DAEMON),
  config: refuse(DAEMON),
  dparam: refuse(DAEMON),
  detach: refuse(DAEMON),
  "no-detach": refuse(DAEMON),
  "files-from": refuse("--files-from would let the client name files outside the checked paths"),
  from0: refuse("--from0 only goes with --files-from, which is refused"),
  filter: refuse(FILTERS),
  exclude: refuse(FILTERS),
  include: refuse(FILTERS),
  "exclude-from": refuse(FILTERS),
  "include-from": refuse(FILTERS),
  "copy-links": refuse(FOLLOWS),
  "copy-dirlinks": refuse(FOLLOWS),
  "keep-dirlinks": refuse(FOLLOWS),
  "copy-unsafe-links": refuse(FOLLOWS),
  "no-munge-links": refuse(FOLLOWS),
  "copy-devices": refuse("device contents are never read or written"),
  "write-devices": refuse("device contents are never read or written"),
  "hard-links": refuse("hard links (-H) are not supported: push without -H"),
  acls: refuse("ACLs (-A) would be stored on published files: push without -A"),
  xattrs: refuse("extended attributes (-X) would be stored on published files: push without -X"),
  "secluded-args": refuse(HIDDEN),
  "protect-args": refuse(HIDDEN),
  debug: refuse("--debug output is not available on this server"),
  "max-alloc": refuse("--max-alloc is set by the server, not by the client"),
  // One push of a sparse file declared at 168 MB took all free space in 6 s with almost no bytes sent.
  preallocate: refuse("--preallocate would reserve disk space for bytes never sent: every key shares this filesystem"),
  iconv: refuse("--iconv is not supported: names are stored as sent"),
  "remote-option": refuse(REMOTE),
  rsh: refuse(REMOTE),
  "rsync-path": refuse(REMOTE),
  super: refuse(OWNERS),
  "fake-super": refuse(OWNERS),
  usermap: refuse(OWNERS),
  groupmap: refuse(OWNERS),
  chown: refuse(OWNERS),
  "copy-as": refuse(OWNERS),
  server: refuse("--server must come first, once"),
  sender: refuse("--sender must come right after --server"),
};

/** Short options: letters of the bundled word (flags), or whole words `-B1024` / `-@-1` (values). */
export const SHORT_OPTIONS: Readonly<Record<string, OptionClass>> = {
  v: flag(),
  q: flag(),
  u: flag(),
  n: flag(),
  l: flag(),
  d: flag(),
  W: flag(),
  o: flag(),
  g: flag(),
  D: flag(),
  t: flag(),
  U: flag(),
  N: flag(),
  p: flag(),
  r: flag(),
  c: flag(),
  C: flag(),
  I: flag(),
  R: flag(),
  x: flag(),
  S: flag(),
  z: flag(),
  // A receiving server reads the client's filter list only with -m (delete modes are refused):
  // a dir-merge rule there can name any file the server may open.
  m: refuse("-m (--prune-empty-dirs) would make a receiving server read the client's filter rules, which can name files outside the root"),
  O: flag("push"),
  J: flag("push"),
  y: flag("push"),
  E: flag("push"),
  B: value(NUM),
  "@": value(SIGNED, "push"),
  s: refuse(HIDDEN),
  b: refuse(MOVES),
  P: refuse(MOVES),
  T: refuse(MOVES),
  K: refuse(FOLLOWS),
  L: refuse(FOLLOWS),
  k: refuse(FOLLOWS),
  H: refuse("hard links (-H) are not supported: push without -H"),
  A: refuse("ACLs (-A) would be stored on published files: push without -A"),
  X: refuse("extended attributes (-X) would be stored on published files: push without -X"),
  M: refuse(REMOTE),
  f: refuse(FILTERS),
  F: refuse(FILTERS),
  "0": refuse("--from0 only goes with --files-from, which is refused"),
};

/** After `e` in the bundled word comes rsync's capability string, not a remote shell. */
export const CAPABILITIES = /^e\d*\.[A-Za-z]*$/;

/** Characters with a meaning to rsync's own wildcard expansion of paths (a backslash escapes). */
const WILDCARD = /[*?[\]\\]/;

export interface RsyncTarget {
  /** Confined below the root. */
  v: VPath;
  /** The client wrote a trailing '/' (or '/.'): for rsync, "the contents of". */
  slash: boolean;
}

export interface RsyncRequest {
  /** --sender: the client pulls (reads); otherwise it pushes into the tree. */
  sender: boolean;
  /** Server options to pass on, already checked against the table, in order, in canonical form. */
  options: string[];
  /** The path arguments as the client gave them (after the '.' placeholder). */
  paths: string[];
  /** The same paths, confined below the root. */
  targets: RsyncTarget[];
}

function deny(message: string): never {
  throw new VbError("NOT_ALLOWED", `rsync: ${message}`);
}

function show(word: string): string {
  return word.length > 80 ? `${word.slice(0, 80)}…` : word;
}

function checkSide(cls: { side: Side }, name: string, sender: boolean): void {
  if (cls.side === "push" && sender) deny(`option '${name}' only applies when the server receives; refused with --sender`);
  if (cls.side === "pull" && !sender) deny(`option '${name}' only applies when the server sends (--sender); refused on a push`);
}

/** Apply the class of `name` to its value; returns the canonical word to pass on. */
function classify(cls: OptionClass | undefined, name: string, val: string | undefined, sender: boolean, canonical: (v?: string) => string): string {
  if (!cls) deny(`option '${show(name)}' is not allowed`);
  if (cls.kind === "refuse") deny(`option '${name}' is refused: ${cls.reason}`);
  checkSide(cls, name, sender);
  if (cls.kind === "flag") {
    if (val !== undefined) deny(`option '${name}' takes no value`);
    return canonical();
  }
  if (val === undefined || !cls.pattern.test(val)) deny(`option '${name}' needs a value of the form ${cls.pattern.source}`);
  const why = cls.check?.(val);
  if (why) deny(why);
  return canonical(val);
}

/** `-vlogDtpre.iLsfxCIvu`: flag letters, then optionally the capability string from `e` on. */
function bundle(word: string, sender: boolean): string {
  const body = word.slice(1);
  const e = body.indexOf("e");
  const letters = e < 0 ? body : body.slice(0, e);
  const caps = e < 0 ? "" : body.slice(e);
  if (!letters && !caps) deny("an empty option '-' is not allowed");
  for (const ch of letters) {
    const cls = Object.hasOwn(SHORT_OPTIONS, ch) ? SHORT_OPTIONS[ch] : undefined;
    if (cls?.kind === "value") deny(`option '-${ch}' must be a word of its own, as in '-${ch}1024'`);
    classify(cls, `-${ch}`, undefined, sender, () => "");
  }
  if (caps && !CAPABILITIES.test(caps))
    deny(`'${show(word)}': after 'e' only rsync's capability string (e<digits>.<letters>) may follow, not a remote shell or more options`);
  return word;
}

function checkPath(p: string, confiner: Confiner): RsyncTarget {
  if (p === "") deny("an empty path is not allowed");
  if (p.startsWith("-")) deny(`path '${show(p)}' starts with '-', which rsync would read as an option`);
  if (WILDCARD.test(p)) deny(`path '${show(p)}' contains a wildcard or backslash (*, ?, [, ], \\), which rsync would expand`);
  const slash = p.endsWith("/") || p.endsWith("/.") || p === ".";
  return { v: confiner.confine(p), slash };
}

/**
 * Check the words after `rsync` against the table. `root` is the configured backup root: every
 * path must lie inside it (relative paths resolve against it).
 */
export function parseRsyncArgs(args: readonly string[], root: string): RsyncRequest {
  if (args[0] !== "--server") deny("only 'rsync --server' is served (the client side of rsync never runs here)");
  let i = 1;
  const sender = args[i] === "--sender";
  if (sender) i++;
  const options: string[] = [];
  let caps = 0;
  for (; i < args.length; i++) {
    const word = args[i]!;
    if (word === ".") break;
    if (word === "--") deny("'--' is refused: options hidden after it would escape the checks");
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
      let val = eq < 0 ? undefined : word.slice(eq + 1);
      const cls = Object.hasOwn(LONG_OPTIONS, name) ? LONG_OPTIONS[name] : undefined;
      // `--opt value`, as rsync also accepts for options that take one.
      if (cls?.kind === "value" && val === undefined && i + 1 < args.length && args[i + 1] !== ".") val = args[++i];
      options.push(classify(cls, `--${name}`, val, sender, (v) => (v === undefined ? `--${name}` : `--${name}=${v}`)));
    } else if (word.startsWith("-")) {
      const letter = word[1] ?? "";
      const cls = Object.hasOwn(SHORT_OPTIONS, letter) ? SHORT_OPTIONS[letter] : undefined;
      if (cls?.kind === "value") options.push(classify(cls, `-${letter}`, word.slice(2), sender, (v) => `-${letter}${v}`));
      else {
        options.push(bundle(word, sender));
        if (word.includes("e") && ++caps > 1) deny("only one capability string (-e.…) is allowed");
      }
    } else deny(`'${show(word)}' is not an option; the '.' placeholder must come before the paths`);
  }
  if (args[i] !== ".") deny("the '.' placeholder before the paths is missing");
  const paths = args.slice(i + 1);
  if (sender && paths.length === 0) deny("a pull needs at least one source path");
  if (!sender && paths.length !== 1) deny(`a push takes exactly one destination (got ${paths.length})`);
  const confiner = new Confiner([root]);
  const targets = paths.map((p) => checkPath(p, confiner));
  return { sender, options, paths, targets };
}
