// The root-side walk. seal and prune run as root over a tree the backup user can write to, so
// every path is a race: a directory can become a symbolic link between two system calls. Nothing
// here resolves a path by name from the top. Each directory is opened relative to its already-open
// parent (/proc/self/fd/N/NAME with O_NOFOLLOW|O_DIRECTORY), each file is opened the same way with
// O_NONBLOCK, and what was opened is fstat'ed and changed through its descriptor. Names are only
// used for unlink(2) inside an open directory, which never follows a link.
import fs from "node:fs";
import { at, closeQuietly, inodeKey, DIR_FLAGS } from "../fsat.js";
import { MAX_DEPTH } from "../vault/paths.js";

const C = fs.constants;
// O_NOCTTY: a terminal swapped in must never become ours.
const FILE_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY;
const utf8 = new TextDecoder("utf-8", { fatal: true });
/** What onSkip is told about a name that is not UTF-8 (never one the gate stored). */
export const NOT_UTF8 = "name is not valid UTF-8";

/** Test hook: called just before a directory or file is opened, to swap things under our feet. */
export type BeforeOpen = (comps: readonly string[], name: string) => void;

export interface WalkOptions {
  /** The device of the root: nothing on another filesystem is entered or touched. */
  dev: number;
  beforeOpen?: BeforeOpen;
  /** Told about every entry the walk leaves alone and why. */
  onSkip?: (comps: readonly string[], name: string, why: string) => void;
}

export interface Dir {
  fd: number;
  comps: readonly string[];
  st: fs.Stats;
  /** Every entry, as valid UTF-8 names (others are reported to onSkip and left alone). */
  names: string[];
  /**
   * The regular files among them (lstat): all a profile's index may see. A directory or anything
   * else named like a backup file is never a member of a set.
   */
  files: string[];
  /** The directory above, open while this one is looked at (undefined for the top). */
  parent?: number;
}

// Why an entry is never acted on, by what lstat (or fstat) says it is.
const NOT_PLAIN: [(st: fs.Stats) => boolean, string][] = [
  [(st) => st.isSymbolicLink(), "symbolic link"],
  [(st) => st.isFIFO(), "FIFO"],
  [(st) => st.isSocket(), "socket"],
  [(st) => st.isBlockDevice() || st.isCharacterDevice(), "device"],
  [(st) => st.isFile() && st.nlink !== 1, "file with more than one link"],
];

export function notPlain(st: fs.Stats, dev: number): string | undefined {
  if (st.dev !== dev) return "on another filesystem";
  return NOT_PLAIN.find(([test]) => test(st))?.[1];
}

function listNames(fd: number, comps: readonly string[], opts: WalkOptions): string[] {
  const out: string[] = [];
  for (const raw of fs.readdirSync(at(fd), { encoding: "buffer" })) {
    try {
      out.push(utf8.decode(raw));
    } catch {
      opts.onSkip?.(comps, raw.toString("latin1"), NOT_UTF8);
    }
  }
  return out;
}

export function lstatIn(dirFd: number, name: string): fs.Stats | null {
  try {
    return fs.lstatSync(at(dirFd, name));
  } catch {
    return null;
  }
}

/** Open the subdirectory `name` of dirFd, or say why not. The caller closes the fd. */
export function openSubdir(dirFd: number, comps: readonly string[], name: string, opts: WalkOptions): { fd: number; st: fs.Stats } | { why: string } {
  if (comps.length >= MAX_DEPTH) return { why: `deeper than ${MAX_DEPTH} levels` };
  opts.beforeOpen?.(comps, name);
  let fd: number;
  try {
    fd = fs.openSync(at(dirFd, name), DIR_FLAGS);
  } catch (e) {
    return { why: `not opened as a directory (${(e as NodeJS.ErrnoException).code})` };
  }
  const st = fs.fstatSync(fd);
  if (!st.isDirectory() || st.dev !== opts.dev) {
    closeQuietly(fd);
    return { why: st.dev !== opts.dev ? "on another filesystem" : "not a directory" };
  }
  return { fd, st };
}

/**
 * Every directory below (and including) the one open as rootFd, depth first, each with its fd open
 * while the caller looks at it. The caller must not close the fds.
 */
export function* walkDirs(rootFd: number, opts: WalkOptions): Generator<Dir> {
  yield* visit(rootFd, [], fs.fstatSync(rootFd), opts, undefined);
}

function* visit(fd: number, comps: readonly string[], st: fs.Stats, opts: WalkOptions, parent: number | undefined): Generator<Dir> {
  const names = listNames(fd, comps, opts);
  // One lstat per entry, before the caller looks: its type says both what the index may see and
  // where the walk goes next (only types are kept, not a Stats per entry).
  const files: string[] = [];
  const dirs: string[] = [];
  for (const name of names) {
    const lst = lstatIn(fd, name);
    if (lst?.isFile()) files.push(name);
    else if (lst?.isDirectory()) dirs.push(name);
  }
  yield { fd, comps, st, names, files, parent };
  for (const name of dirs) {
    const sub = openSubdir(fd, comps, name, opts);
    if ("why" in sub) {
      opts.onSkip?.(comps, name, sub.why);
      continue;
    }
    try {
      yield* visit(sub.fd, [...comps, name], sub.st, opts, fd);
    } finally {
      closeQuietly(sub.fd);
    }
  }
}

/**
 * Open a plain file for changing its owner or mode: a regular file with one link on our
 * filesystem, checked on what was opened. `expect` is the lstat the decision was based on.
 * `links: "any"` is for reading only (verify --stored): a file rsync just published still has
 * its staging name, and reading through a second link changes nothing.
 */
export function openPlainFile(dir: Dir, name: string, expect: fs.Stats, opts: WalkOptions, links: "one" | "any" = "one"): { fd: number; st: fs.Stats } | { why: string } {
  const odd = (st: fs.Stats) => (links === "any" && st.isFile() ? (st.dev !== opts.dev ? "on another filesystem" : undefined) : notPlain(st, opts.dev));
  const before = odd(expect) ?? (expect.isFile() ? undefined : "not a regular file");
  if (before) return { why: before };
  opts.beforeOpen?.(dir.comps, name);
  let fd: number;
  try {
    fd = fs.openSync(at(dir.fd, name), FILE_FLAGS);
  } catch (e) {
    return { why: `not opened (${(e as NodeJS.ErrnoException).code})` };
  }
  const st = fs.fstatSync(fd);
  const why = odd(st) ?? (!st.isFile() ? "not a regular file" : inodeKey(st) !== inodeKey(expect) ? "changed while being looked at" : undefined);
  if (why) {
    closeQuietly(fd);
    return { why };
  }
  return { fd, st };
}

/** unlink(2) of `name` in an open directory, only if it is still the file `expect`. */
export function unlinkIfSame(dirFd: number, name: string, expect: fs.Stats): boolean {
  const now = lstatIn(dirFd, name);
  if (!now || inodeKey(now) !== inodeKey(expect) || notPlain(now, expect.dev)) return false;
  fs.unlinkSync(at(dirFd, name));
  return true;
}

/**
 * rm -r of `name` inside the open directory dirFd, without following anything: subdirectories are
 * opened relative to their parent, entries are unlinked inside their own directory, and a
 * directory replaced by a link is unlinked as the link it now is. Returns the entries removed.
 */
export function removeTreeAt(dirFd: number, name: string, opts: WalkOptions, comps: readonly string[] = []): number {
  const lst = lstatIn(dirFd, name);
  if (!lst) return 0;
  if (!lst.isDirectory()) {
    fs.unlinkSync(at(dirFd, name));
    return 1;
  }
  const sub = openSubdir(dirFd, comps, name, opts);
  if ("why" in sub) {
    // Swapped for a link meanwhile, or on another filesystem: never entered.
    const now = lstatIn(dirFd, name);
    if (now && !now.isDirectory()) {
      fs.unlinkSync(at(dirFd, name));
      return 1;
    }
    opts.onSkip?.(comps, name, sub.why);
    return 0;
  }
  let removed = 0;
  try {
    const here = [...comps, name];
    for (const n of listNames(sub.fd, here, opts)) removed += removeTreeAt(sub.fd, n, opts, here);
  } finally {
    closeQuietly(sub.fd);
  }
  fs.rmdirSync(at(dirFd, name));
  return removed + 1;
}

/** Open a directory by absolute path, refusing a symbolic link as its last component. */
export function openTop(p: string): { fd: number; st: fs.Stats } {
  const fd = fs.openSync(p, DIR_FLAGS);
  return { fd, st: fs.fstatSync(fd) };
}
