// `validate-backup verify --stored --config F` (root, weekly from install-remote's schedule): every
// stored file, and every kept version of a replaced one, hashed again and compared with the
// SHA-256 the audit log recorded when it was published. No key is needed: this tells bit rot and
// tampering on REMOTE apart from damage in transit, which no check of a copy on SOURCE can.
//
// The log (with its rotated siblings) is replayed first (ledger.ts), then the tree is walked the
// root-side way (walk.ts: fd by fd, never following a link, each file checked on what was
// opened), each file streamed through one fixed buffer. Sessions go on while this runs: lines
// appended meanwhile are read at the end, and a path they touched is judged next time, not
// reported now.
import fs from "node:fs";
import { VbError, errnoText } from "../errors.js";
import { cleanBytes, cleanString, say, visible } from "../audit/sanitize.js";
import { readLines, prevOf } from "../audit/chain.js";
import { columns } from "../audit/render.js";
import { sha256OfFd } from "../vault/hasher.js";
import { closeQuietly, inodeKey } from "../fsat.js";
import { VERSIONS_DIR, versionKey } from "../vault/versions.js";
import { Ledger, splitKey } from "./ledger.js";
import { walkDirs, lstatIn, openSubdir, openPlainFile, NOT_UTF8, type Dir, type WalkOptions } from "./walk.js";
import { open, parseArgs, requireRoot, main, EXIT, type Housekeeping } from "./context.js";
import { usageFault } from "../usage.js";

const HASH_BUFFER = 1024 * 1024;
/** Problems kept for the table (and for the late lines to clear); past this they are only counted. */
const MAX_ROWS = 10_000;
/** The largest versions/<key>/path file we read (a path is at most 4096 bytes). */
const MAX_PATH_FILE = 8192;
const VERSION_FILE = /^[1-9]\d{0,2}$/;

export type Kind = "changed" | "missing" | "unrecorded" | "unreadable";
export const KINDS: readonly Kind[] = ["changed", "missing", "unrecorded", "unreadable"];

export interface Finding {
  kind: Kind;
  /** As the audit log writes it (control characters made visible); versions as "P [version N]". */
  path: string;
  /** The path's ledger key, to clear it when a late line touched it. */
  key: string;
  detail: string;
}

export interface StoredReport {
  logs: string[];
  /** Files (and versions) the log says must be there, when the walk began. */
  recorded: number;
  found: number;
  judged: number;
  matched: number;
  versions: number;
  /** Touched by a session while this ran: judged on the next run. */
  late: number;
  counts: Record<Kind, number>;
  rows: Finding[];
  notes: string[];
  /** Audit logs not read (a link, not a regular file), "FILE (why)": each also an unreadable row. */
  unreadLogs: string[];
}

/** F's rotated siblings F.1, F.2, … (as long as they go on), oldest first, then F. */
export function logFiles(file: string): { files: string[]; notes: string[] } {
  const rotated: string[] = [];
  // One file under two names (an audit --rotate killed between its link and its unlink) is read once.
  // lstat: a symbolic link (dangling or not) is not that file again, nor the end of the list; it
  // stays in it, and replay reports it, unread.
  const seen = new Set<string>();
  const lstat = (f: string) => fs.lstatSync(f, { throwIfNoEntry: false });
  const first = (f: string) => {
    const st = lstat(f);
    const key = st ? inodeKey(st) : f;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  };
  first(file);
  let n = 1;
  for (; lstat(`${file}.${n}`); n++) if (first(`${file}.${n}`)) rotated.push(`${file}.${n}`);
  const notes: string[] = [];
  for (const gz of [`${file}.${n}.gz`, `${file}.${n}.xz`, `${file}.${n}.zst`])
    if (lstat(gz)) notes.push(`${gz} is compressed and was not read: files it recorded are reported as unrecorded (keep rotated logs as ${file}.N)`);
  return { files: [...rotated.reverse(), file], notes };
}

const short = (hex: string) => `${hex.slice(0, 16)}…`;

class Judge {
  readonly report: StoredReport;
  private readonly buf = Buffer.allocUnsafe(HASH_BUFFER);
  /** Keys that cleaning changed or could have made: two names may read the same in the log. */
  private readonly oddKeys = new Set<string>();

  constructor(
    private readonly h: Housekeeping,
    private readonly ledger: Ledger,
    logs: string[],
    notes: string[],
  ) {
    this.report = { logs, recorded: 0, found: 0, judged: 0, matched: 0, versions: 0, late: 0, counts: { changed: 0, missing: 0, unrecorded: 0, unreadable: 0 }, rows: [], notes, unreadLogs: [] };
  }

  /** An audit log that was not read: a problem, never a silent gap in what vouches for the files. */
  unreadLog(u: UnreadLog, what: string): void {
    this.add("unreadable", u.file, u.file, `an audit log that is ${u.why}: ${what}`, false);
    this.report.unreadLogs.push(`${u.file} (${u.why})`);
  }

  private get walk(): WalkOptions {
    return this.h.walk;
  }

  /** A problem; `onDisk` false for what was not found at all (it is not one of the entries found). */
  add(kind: Kind, path: string, key: string, detail: string, onDisk = true): void {
    if (onDisk) this.report.judged++;
    this.report.counts[kind]++;
    if (this.report.rows.length < MAX_ROWS) this.report.rows.push({ kind, path, key, detail });
  }

  private ok(): void {
    this.report.judged++;
    this.report.matched++;
  }

  /** An entry the walk would not enter or whose name is not UTF-8: found, and a problem. */
  private skipped(top: string, comps: readonly string[], name: string, why: string): void {
    this.report.found++;
    const raw = Buffer.concat([Buffer.from([...comps, ""].join("/")), Buffer.from(name, "latin1")]);
    const shown = `${top}${cleanBytes(raw)}`;
    if (why === NOT_UTF8) this.add("unrecorded", shown, shown, `${why}: the gate never stores such a name`);
    else this.add("unreadable", shown, shown, `not entered: ${why}`);
  }

  /** The stored files below the root. */
  root(): void {
    const onSkip = (comps: readonly string[], name: string, why: string) => this.skipped("", comps, name, why);
    for (const d of walkDirs(this.h.rootFd, { ...this.walk, onSkip })) {
      for (const name of d.names) {
        const key = this.keyOf([...d.comps, name].join("/"));
        this.entry(d, name, key, key, () => this.ledger.take(key));
      }
    }
  }

  /** The log's form of a path; a second file with the same form cannot be told apart from the first. */
  private keyOf(rel: string): string {
    return cleanString(rel);
  }

  private ambiguous(key: string): boolean {
    if (!key.includes("\\") && !key.includes("…(+")) return false;
    if (this.oddKeys.has(key)) return true;
    this.oddKeys.add(key);
    return false;
  }

  /**
   * Judge one entry of an open directory. `expected` takes its recorded hash out of the ledger
   * (so that what stays there is missing). Directories are the walk's.
   */
  private entry(d: Dir, name: string, shown: string, key: string, expected: () => string | undefined): void {
    const st = lstatIn(d.fd, name);
    if (!st || st.isDirectory()) return; // vanished (then missing, unless a session removed it), or the walk's
    this.report.found++;
    if (this.ambiguous(key)) return this.add("unrecorded", shown, key, "its name reads the same in the audit log as another file's: it cannot be told apart");
    const want = expected();
    if (!st.isFile()) {
      const what = st.isSymbolicLink() ? "a symbolic link" : "not a regular file";
      return want === undefined ? this.add("unrecorded", shown, key, `${what}, which the gate never stores`) : this.add("changed", shown, key, `recorded ${short(want)}, now ${what}`);
    }
    const f = openPlainFile(d, name, st, this.walk, "any");
    if ("why" in f) return this.add("unreadable", shown, key, f.why);
    let got: string;
    try {
      got = sha256OfFd(f.fd, f.st.size, this.buf);
    } catch (e) {
      return this.add("unreadable", shown, key, `read failed (${errnoText(e)})`);
    } finally {
      closeQuietly(f.fd);
    }
    if (want === undefined) this.add("unrecorded", shown, key, `not published through the gate according to the audit log (sha256 ${short(got)})`);
    else if (want !== got) this.add("changed", shown, key, `recorded ${short(want)}, now ${short(got)}`);
    else this.ok();
  }

  /**
   * The kept versions, state/versions/<versionKey(path)>/<n>, each with a `path` file naming what
   * it is a version of. That file is the backup user's: it is believed only if its hash is the
   * directory's name.
   */
  versions(): void {
    const top = `${VERSIONS_DIR}/`;
    const v = openSubdir(this.h.stateFd, [], VERSIONS_DIR, this.walk);
    if ("why" in v) {
      if (lstatIn(this.h.stateFd, VERSIONS_DIR)) this.skipped(`state:`, [], VERSIONS_DIR, v.why);
      return;
    }
    const onSkip = (comps: readonly string[], name: string, why: string) => this.skipped(`state:${top}`, comps, name, why);
    try {
      for (const d of walkDirs(v.fd, { ...this.walk, onSkip })) {
        const owner = d.comps.length === 1 ? this.versionsOf(d) : undefined;
        for (const name of d.names) {
          const odd = `state:${top}${cleanString([...d.comps, name].join("/"))}`;
          // entry() leaves directories to the walk: at the top, only stray files are judged here.
          if (d.comps.length === 1 && name === "path") continue;
          else if (owner && VERSION_FILE.test(name)) {
            const n = Number(name);
            this.report.versions++;
            this.entry(d, name, `${owner} [version ${n}]`, owner, () => this.ledger.takeVersion(owner, n));
          } else this.entry(d, name, odd, odd, () => undefined);
        }
      }
    } finally {
      closeQuietly(v.fd);
    }
  }

  /** The ledger key of the path a version directory keeps, or undefined (then a problem). */
  private versionsOf(d: Dir): string | undefined {
    const where = `state:${VERSIONS_DIR}/${cleanString(d.comps[0]!)}`;
    const st = lstatIn(d.fd, "path");
    const f = st ? openPlainFile(d, "path", st, this.walk) : { why: "no 'path' file" };
    if ("why" in f) {
      this.add("unreadable", `${where}/path`, where, `${f.why}: the versions here cannot be matched to a file`);
      this.report.found++;
      return undefined;
    }
    let rel: string;
    try {
      const buf = Buffer.alloc(Math.min(f.st.size, MAX_PATH_FILE));
      rel = buf.subarray(0, fs.readSync(f.fd, buf, 0, buf.length, 0)).toString("utf8").replace(/\n$/, "");
    } finally {
      closeQuietly(f.fd);
    }
    if (versionKey(rel) === d.comps[0]) return this.keyOf(rel);
    this.report.found++;
    this.add("changed", `${where}/path`, where, `names '${cleanString(rel, 200)}', whose versions would be kept in ${VERSIONS_DIR}/${versionKey(rel)}`);
    return undefined;
  }

  /** What the log recorded and the walk did not find. */
  missing(): void {
    for (const { key, version } of this.ledger.left())
      this.add("missing", version === undefined ? key : `${key} [version ${version}]`, key, "recorded in the audit log, not found", false);
  }

  /** Paths a session (or prune) touched while this ran: their rows are dropped, judged on the next run. */
  forgive(late: Late): void {
    if (!late.paths.size && !late.dirs.size) return;
    const keep: Finding[] = [];
    for (const r of this.report.rows) {
      if (!late.paths.has(r.key) && !late.dirs.has(splitKey(r.key)[0])) {
        keep.push(r);
        continue;
      }
      this.report.counts[r.kind]--;
      this.report.late++;
    }
    this.report.rows = keep;
  }
}

interface UnreadLog {
  file: string;
  why: string;
}

/**
 * A log opened for reading, never through a symbolic link; its identity is its descriptor's, the
 * file that is read. null when nothing is there; `why` when what is there is not read.
 */
async function openLog(file: string): Promise<{ fh: fs.promises.FileHandle; key: string } | UnreadLog | null> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    if (code === "ELOOP") return { file, why: "a symbolic link, which verify --stored never follows" };
    throw e;
  }
  const st = await fh.stat();
  if (st.isFile()) return { fh, key: inodeKey(st) };
  await fh.close();
  return { file, why: "not a regular file" };
}

/** Where the current log's replay ended, and which file that was (undefined when it was not read). */
interface Mark {
  end: number;
  key?: string;
}

/** Replay the logs into the ledger; returns where the current log ended, to read what follows. */
async function replay(ledger: Ledger, files: string[], notes: string[], unread: UnreadLog[]): Promise<Mark> {
  let mark: Mark = { end: 0 };
  for (const file of files) {
    const log = await openLog(file);
    if (log === null) throw new VbError("IO", `${file} went away while it was being read; run again`);
    mark = { end: 0 }; // the current log's, the last of `files`
    if ("why" in log) {
      unread.push(log);
      continue;
    }
    let bad = 0;
    try {
      for await (const line of readLines(log.fh)) {
        const { json } = prevOf(line.bytes);
        if (json) ledger.apply(json);
        else bad++;
        mark.end = line.end;
      }
    } finally {
      await log.fh.close();
    }
    mark.key = log.key;
    if (bad) notes.push(`${file}: ${bad} line(s) that are not JSON objects were skipped (audit --verify checks the log)`);
  }
  if (ledger.counts.unusable) notes.push(`${ledger.counts.unusable} file event(s) with fields that cannot be used were skipped`);
  return mark;
}

interface Late {
  paths: Set<string>;
  /** Directories prune removed a chain from: the walk may have taken part of it out of the ledger already. */
  dirs: Set<string>;
}

/**
 * The lines appended to the current log since the replay (or to the file it became, if rotated).
 * Each file is known by the descriptor it is read through; a link or other object where a log
 * should be is not read, and goes to `unread`.
 */
async function lateLines(ledger: Ledger, file: string, from: Mark, notes: string[], unread: UnreadLog[]): Promise<Late> {
  const late: Late = { paths: new Set(), dirs: new Set() };
  if (from.key === undefined) return late; // the current log was not read: nothing follows from it
  const read = async (fh: fs.promises.FileHandle, start: number) => {
    for await (const line of readLines(fh, start)) {
      const { json } = prevOf(line.bytes);
      if (!json) continue;
      if (json.event === "prune-chain" && json.label === ledger.label && typeof json.dir === "string") late.dirs.add(json.dir === "." ? "" : json.dir);
      for (const key of ledger.apply(json)) late.paths.add(key);
    }
  };
  const opened: fs.promises.FileHandle[] = [];
  const take = async (f: string) => {
    const log = await openLog(f);
    if (log === null) return null;
    if ("why" in log) {
      unread.push(log);
      return undefined;
    }
    opened.push(log.fh);
    return log;
  };
  try {
    const cur = await take(file);
    if (cur === undefined) return late;
    if (cur?.key === from.key) {
      await read(cur.fh, from.end);
      return late;
    }
    const one = await take(`${file}.1`);
    if (one === undefined) return late;
    if (one?.key === from.key) {
      await read(one.fh, from.end);
      if (cur) await read(cur.fh, 0);
    } else notes.push(`${file} was rotated twice while this ran: paths changed meanwhile may be reported`);
    return late;
  } finally {
    for (const fh of opened) await fh.close();
  }
}

export async function verifyStored(h: Housekeeping): Promise<StoredReport> {
  const file = h.policy.audit.file;
  const { files, notes } = logFiles(file);
  const ledger = new Ledger(h.policy.label);
  const unread: UnreadLog[] = [];
  const end = await replay(ledger, files, notes, unread);
  const j = new Judge(h, ledger, files, notes);
  for (const u of unread) j.unreadLog(u, "not read (what only it recorded is reported as unrecorded)");
  j.report.recorded = ledger.size + ledger.versionCount;
  j.root();
  j.versions();
  j.missing();
  const unreadLate: UnreadLog[] = [];
  j.forgive(await lateLines(ledger, file, end, notes, unreadLate));
  for (const u of unreadLate) j.unreadLog(u, "the lines appended while this ran were not read from it");
  const r = j.report;
  if (r.judged !== r.found) throw new VbError("IO", `internal check failed: ${r.found} entries found but ${r.judged} judged; nothing can be concluded`);
  return r;
}

export function problems(r: StoredReport): number {
  return KINDS.reduce((n, k) => n + r.counts[k], 0);
}

export function describe(r: StoredReport): string {
  const out = [`audit log${r.logs.length > 1 ? "s" : ""}: ${r.logs.join(", ")}`];
  const shown = r.rows.slice(0, MAX_ROWS);
  if (shown.length) out.push(...columns([["PROBLEM", "PATH", "DETAIL"], ...shown.map((f) => [f.kind.toUpperCase(), f.path, f.detail])]));
  const more = problems(r) - shown.length;
  if (more > 0) out.push(`  … and ${more} more`);
  for (const n of r.notes) out.push(`note: ${visible(n)}`);
  if (r.late) out.push(`note: ${r.late} path(s) changed by a session while this ran: judged on the next run`);
  const counts = KINDS.map((k) => `${r.counts[k]} ${k}`).join(", ");
  const n = problems(r);
  out.push(`verify --stored: ${r.found} entries found and judged (${r.versions} kept versions), ${r.recorded} recorded, ${r.matched} match the audit log; ${counts}: ${n ? `${n} problem(s)` : "OK"}`);
  return out.join("\n");
}

export async function storedMain(args: string[]): Promise<number> {
  return main("verify --stored", async () => {
    const o = parseArgs(args, { "--stored": "flag", "--config": "value" }, "verify");
    const config = o.get("--config");
    if (!config || !o.has("--stored")) throw usageFault("verify", "--stored and --config FILE are required");
    requireRoot("verify --stored", "it reads every stored file and the state directory");
    const h = open(config, "verify-stored");
    try {
      const r = await verifyStored(h);
      const n = problems(r);
      h.audit.event("verify-stored", { ok: n === 0, ...(n ? { anomaly: true } : {}), found: r.found, matched: r.matched, versions: r.versions, recorded: r.recorded, ...r.counts, late: r.late, logs: r.logs.length });
      say(describe(r));
      // stderr too: cron drops stdout and mails stderr to root.
      const unread = r.unreadLogs.length ? `; not read: ${r.unreadLogs.join(", ")}` : "";
      if (n) process.stderr.write(`validate-backup verify --stored: ${h.policy.label}: ${n} problem(s): ${KINDS.map((k) => `${r.counts[k]} ${k}`).join(", ")}${unread}\n`);
      return n ? 1 : EXIT.ok;
    } finally {
      h.close();
    }
  });
}
