// The audit log's hash chain. Every line ends with "prev": the SHA-256 of the previous line's bytes
// (of the empty string for the first line), written under the log's append lock so the chain stays
// linear. An edited, removed, inserted or reordered line breaks it; a truncated tail does not, so
// root records the chain head now and then (`audit --record-head`) and `audit --verify` checks
// that every recorded head is still there.
import fs from "node:fs";
import { Sha256, sha256Hex } from "./sha256.js";
import { nodeCrypto, nodeCryptoLoaded } from "../lazy.js";
import { inodeKey } from "../fsat.js";

export const CHAIN_FIELD = "prev";
const TAIL_CHUNK = 64 * 1024;
const READ_CHUNK = 1024 * 1024;
/** Lines longer than this are hashed but not parsed (ours are a few KiB at most). */
export const MAX_LINE = 1024 * 1024;
/** How far back and ahead a broken link is matched against other lines to name a reordering. */
const REORDER_WINDOW = 4096;

// A process's first two hashes are done in JavaScript (sha256.ts, a few µs each for lines this
// short) unless node:crypto is loaded already; from the third on, node:crypto, loaded then (lazy.ts).
// A refused command hashes the log's last line, a listing that and its opening line: neither loads
// node:crypto.
const JS_HASHES = 2;
let jsHashes = 0;

interface Hash {
  update(data: Uint8Array): void;
  hex(): string;
}

/** Whether this hash is one of the process's JavaScript ones (counts it). */
function jsTurn(): boolean {
  if (nodeCryptoLoaded() || jsHashes >= JS_HASHES) return false;
  jsHashes++;
  return true;
}

function newHash(): Hash {
  if (jsTurn()) {
    const h = new Sha256();
    return { update: (d) => void h.update(d), hex: () => h.digestHex() };
  }
  const h = nodeCrypto().createHash("sha256");
  return { update: (d) => void h.update(d), hex: () => h.digest("hex") };
}

export function lineHash(line: Uint8Array): string {
  if (jsTurn()) return sha256Hex(line);
  // crypto.hash (Node >= 20.12) hashes in one call; a Hash object per line costs more than the line.
  const crypto = nodeCrypto();
  const oneShot = (crypto as { hash?: (alg: string, data: Uint8Array, enc: "hex") => string }).hash;
  return oneShot ? oneShot("sha256", line, "hex") : crypto.createHash("sha256").update(line).digest("hex");
}

/** The chain field of a line written by a session that may write the log but not read it (log.ts). */
export const UNCHAINED = "unreadable";
/** The SHA-256 of nothing: what line 1 of a log chains to. */
export const CHAIN_START = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Append the chain field to one serialized JSON object line (with or without its newline). */
export function chainLine(json: string, prev: string): string {
  const body = json.endsWith("\n") ? json.slice(0, -1) : json;
  if (!body.endsWith("}")) throw new Error("an audit line must be a JSON object");
  return `${body.slice(0, -1)}${body.length > 2 ? "," : ""}"${CHAIN_FIELD}":"${prev}"}\n`;
}

/**
 * The hash of the last line of the file open at `fd` (`size` bytes, read with pread), and whether
 * the file ends with a newline (if not, a writer must start a new line first). Streams: the last
 * line is found backwards in chunks, then hashed forwards.
 */
export function tailHash(fd: number, size: number): { hash: string; newline: boolean } {
  if (size === 0) return { hash: CHAIN_START, newline: true };
  const buf = Buffer.allocUnsafe(TAIL_CHUNK);
  const last = Buffer.alloc(1);
  fs.readSync(fd, last, 0, 1, size - 1);
  const newline = last[0] === 0x0a;
  const end = newline ? size - 1 : size;
  let start = 0;
  for (let pos = end; pos > 0 && start === 0; ) {
    const from = Math.max(0, pos - TAIL_CHUNK);
    const n = fs.readSync(fd, buf, 0, pos - from, from);
    const i = buf.subarray(0, n).lastIndexOf(0x0a);
    if (i >= 0) start = from + i + 1;
    pos = from;
  }
  const h = newHash();
  for (let pos = start; pos < end; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
    if (n <= 0) break;
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return { hash: h.hex(), newline };
}

export interface Line {
  /** 1-based line number. */
  no: number;
  /** The bytes without the newline; null when longer than MAX_LINE. */
  bytes: Buffer | null;
  hash: string;
  /** Byte offset just after this line (and its newline). */
  end: number;
}

/**
 * Read a file line by line with flat memory, hashing every line's exact bytes. From byte `start`
 * on, when given (the lines appended since an earlier read; `no` then counts from there). An open
 * handle is read as it is and left open: its caller took the file's identity from that descriptor.
 */
export async function* readLines(file: string | fs.promises.FileHandle, start = 0): AsyncGenerator<Line> {
  const fh = typeof file === "string" ? await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK) : file;
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    let parts: Buffer[] = [];
    let kept = 0;
    const crypto = nodeCrypto();
    let h = crypto.createHash("sha256");
    let no = 0;
    let offset = start;
    const finish = (): Line => {
      const bytes = kept <= MAX_LINE ? Buffer.concat(parts) : null;
      const line = { no: ++no, bytes, hash: h.digest("hex"), end: offset };
      parts = [];
      kept = 0;
      h = crypto.createHash("sha256");
      return line;
    };
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      if (bytesRead === 0) break;
      let from = 0;
      while (from < bytesRead) {
        const nl = buf.indexOf(0x0a, from);
        const to = nl < 0 || nl >= bytesRead ? bytesRead : nl;
        const piece = buf.subarray(from, to);
        h.update(piece);
        if (kept + piece.length <= MAX_LINE) parts.push(Buffer.from(piece));
        kept += piece.length;
        offset += to - from;
        if (to === bytesRead) break;
        offset += 1;
        yield finish();
        from = to + 1;
      }
    }
    if (kept > 0 || parts.length > 0) yield finish();
  } finally {
    if (typeof file === "string") await fh.close();
  }
}

export interface Head {
  time: string;
  file: string;
  dev: number;
  ino: number;
  lines: number;
  bytes: number;
  /** Hash of line `lines` (CHAIN_START for an empty log). */
  head: string;
}

export interface Problem {
  line: number;
  what: string;
}

/** Checks the chain line by line; feed it every line in order, then call finish(). */
export class ChainChecker {
  readonly problems: Problem[] = [];
  /** `start`: the hash line 1 links to (the last line of the file this one was rotated from). */
  constructor(private last = CHAIN_START) {}
  private lines = 0;
  private chained = 0;
  /** Lines before the first chained one: written before the chain existed. */
  unchainedPrefix = 0;
  private recent = new Map<string, number>();
  private pending = new Map<string, Problem>();

  push(line: Line, prev: string | undefined): void {
    this.lines = line.no;
    const broke = (what: string) => this.problems.push({ line: line.no, what });
    const earlier = this.pending.get(line.hash);
    if (earlier) {
      earlier.what = `line ${earlier.line} chains to line ${line.no}, which comes after it: lines were reordered`;
      this.pending.delete(line.hash);
    }
    if (prev === undefined) {
      if (this.chained === 0) this.unchainedPrefix++;
      else broke(`line ${line.no} has no "${CHAIN_FIELD}" field: it was not written by validate-backup, or was edited`);
    } else if (prev === UNCHAINED) {
      broke(`line ${line.no} is not chained: it was written by a session that could not read the log ("${CHAIN_FIELD}":"${UNCHAINED}"); let the key's account read the log (install-remote makes it 0660, root's and the account's group's)`);
    } else if (prev !== this.last) {
      const at = this.recent.get(prev);
      if (at !== undefined) broke(`line ${line.no} chains to line ${at}, not to line ${line.no - 1}: lines were reordered, or lines ${at + 1}-${line.no - 1} were inserted`);
      else {
        const p: Problem =
          line.no === 1
            ? { line: 1, what: `line 1 does not start the chain: lines before it were removed` }
            : { line: line.no, what: `line ${line.no} does not chain to line ${line.no - 1}: line ${line.no - 1} was changed, or lines between them were removed` };
        this.problems.push(p);
        this.remember(this.pending, prev, p);
      }
    }
    if (prev !== undefined) this.chained++;
    this.remember(this.recent, line.hash, line.no);
    this.last = line.hash;
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.set(key, value);
    if (map.size > REORDER_WINDOW) map.delete(map.keys().next().value as string);
  }

  get head(): string {
    return this.last;
  }

  get count(): number {
    return this.lines;
  }
}

/** Parse the chain field of one line; undefined when absent or unreadable. */
export function prevOf(bytes: Buffer | null): { prev: string | undefined; json: Record<string, unknown> | undefined } {
  if (!bytes) return { prev: undefined, json: undefined };
  try {
    const json = JSON.parse(bytes.toString("utf8")) as unknown;
    if (json === null || typeof json !== "object" || Array.isArray(json)) return { prev: undefined, json: undefined };
    const prev = (json as Record<string, unknown>)[CHAIN_FIELD];
    return { prev: typeof prev === "string" ? prev : undefined, json: json as Record<string, unknown> };
  } catch {
    return { prev: undefined, json: undefined };
  }
}

// ---- recorded heads ----

export function defaultHeadFile(log: string): string {
  return `${log}.head`;
}

export function readHeads(headFile: string): Head[] {
  let text: string;
  try {
    text = fs.readFileSync(headFile, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  const out: Head[] = [];
  for (const l of text.split("\n")) {
    if (!l.trim()) continue;
    try {
      out.push(JSON.parse(l) as Head);
    } catch {
      /* reported by verify as an unreadable record */
      out.push({ time: "?", file: "?", dev: -1, ino: -1, lines: -1, bytes: -1, head: "" });
    }
  }
  return out;
}

/** Problems with where the heads are kept: only root may be able to change them. */
export function headFileProblems(headFile: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(headFile);
  } catch {
    return [];
  }
  const out: string[] = [];
  if (!st.isFile()) out.push(`${headFile} is not a regular file`);
  if (st.uid !== 0) out.push(`${headFile} is owned by uid ${st.uid}, not root: fix with chown root:root ${headFile}`);
  if (st.mode & 0o022) out.push(`${headFile} is writable by others than its owner: fix with chmod 600 ${headFile}`);
  return out;
}

export interface VerifyResult {
  file: string;
  lines: number;
  /** Byte offset after the last line read, and the file's identity when the walk began. */
  bytes: number;
  dev: number;
  ino: number;
  head: string;
  unchainedPrefix: number;
  heads: number;
  problems: Problem[];
  /** Things an admin should know that are not evidence of tampering. */
  notes: string[];
  /** The rotated file this one goes on from, checked first (verifyChain). */
  earlier?: VerifyResult[];
}

export interface VerifyOptions {
  /** The hash line 1 links to: the last line of the rotated file before it. */
  start?: string;
  /** false for a rotated file: the latest recorded head is the current file's, not its. */
  current?: boolean;
}

/** Walk the whole log: the chain, then every recorded head of this very file. */
export async function verifyLog(
  file: string,
  headFile = defaultHeadFile(file),
  onLine?: (l: Line, json: Record<string, unknown> | undefined) => void,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const st = fs.statSync(file);
  const heads = readHeads(headFile);
  const notes: string[] = [];
  const problems: Problem[] = [];
  for (const p of headFileProblems(headFile)) problems.push({ line: 0, what: p });
  const ours = heads.filter((h) => h.dev === st.dev && h.ino === st.ino);
  const latest = heads.at(-1);
  if (opts.current === false) {
    /* the latest head is the current file's */
  } else if (!latest) notes.push(`no recorded head in ${headFile}: a truncated tail cannot be detected (the root timer runs audit --record-head)`);
  else if (latest.dev !== st.dev || latest.ino !== st.ino)
    problems.push({ line: 0, what: `${file} is not the file whose head was recorded at ${latest.time}: it was replaced or rotated (after a rotation, run audit --record-head)` });
  const byLine = new Map<number, Head[]>();
  for (const h of ours) byLine.set(h.lines, [...(byLine.get(h.lines) ?? []), h]);

  const chain = new ChainChecker(opts.start);
  let endOffset = 0;
  for await (const line of readLines(file)) {
    const { prev, json } = prevOf(line.bytes);
    if (line.bytes === null) problems.push({ line: line.no, what: `line ${line.no} is longer than ${MAX_LINE} bytes` });
    else if (!json) problems.push({ line: line.no, what: `line ${line.no} is not a JSON object` });
    chain.push(line, prev);
    for (const h of byLine.get(line.no) ?? [])
      if (h.head !== line.hash) problems.push({ line: line.no, what: `line ${line.no} differs from the head recorded at ${h.time}: the log was rewritten after it` });
    onLine?.(line, json);
    endOffset = line.end;
  }
  if (chain.unchainedPrefix > 0) notes.push(`lines 1-${chain.unchainedPrefix} carry no chain (written before it existed)`);
  for (const h of ours) {
    if (h.lines > chain.count)
      problems.push({ line: chain.count, what: `the log has ${chain.count} lines, but ${h.lines} were recorded at ${h.time}: its tail was truncated or rewritten` });
    else if (h.lines === 0 && h.head !== CHAIN_START) problems.push({ line: 0, what: `unreadable head record (${h.time})` });
  }
  problems.push(...chain.problems);
  problems.sort((a, b) => a.line - b.line);
  return { file, lines: chain.count, bytes: endOffset, dev: st.dev, ino: st.ino, head: chain.head, unchainedPrefix: chain.unchainedPrefix, heads: ours.length, problems, notes };
}

/** The file `audit --rotate` moves the log to; older ones are shifted to .2, .3, … */
export function rotatedName(log: string): string {
  return `${log}.1`;
}

/** One regular file under two names (lstat's: a link is never taken for what it points to). */
export function sameFile(a: fs.Stats | undefined, b: fs.Stats | undefined): boolean {
  return a !== undefined && b !== undefined && a.isFile() && b.isFile() && inodeKey(a) === inodeKey(b);
}

/**
 * The rotated file `log` goes on from: LOG.1, or LOG.2 when LOG.1 is the log itself under a second
 * name (an audit --rotate killed between the link(2) and the unlink(2) of its move: the log had not
 * been rotated yet, its earlier rotated file had moved to LOG.2), or when LOG.1 is missing and
 * LOG.2 is there (`gap`: the name that is missing). The next audit --rotate repairs these and a shift
 * left half done (one rotated file under two names), which the notes say.
 */
export function previousLog(log: string): { rotated: string; notes: string[]; gap?: string } {
  const stat = (f: string) => fs.lstatSync(f, { throwIfNoEntry: false });
  const [cur, one, two] = [stat(log), stat(`${log}.1`), stat(`${log}.2`)];
  const notes: string[] = [];
  let rotated = rotatedName(log);
  if (cur && sameFile(cur, one)) {
    notes.push(`${rotated} is ${log} itself under a second name: an audit --rotate was interrupted before it was done (the next audit --rotate finishes it); the chain is checked against ${log}.2`);
    rotated = `${log}.2`;
  } else if (one && sameFile(one, two)) notes.push(`${log}.2 is ${rotated} under a second name: an audit --rotate was interrupted while it moved the rotated logs (the next audit --rotate finishes it)`);
  else if (!one && two) {
    // What that repair leaves until its rotation is done. A .1 removed by someone else shows too:
    // the log's line 1 then does not link to .2's last line.
    notes.push(`${rotated} is missing but ${log}.2 is there (an interrupted audit --rotate leaves this; the next one finishes it): the chain is checked against ${log}.2`);
    return { rotated: `${log}.2`, notes, gap: rotated };
  }
  return { rotated, notes };
}

async function firstLine(file: string): Promise<Record<string, unknown> | undefined> {
  for await (const line of readLines(file)) return prevOf(line.bytes).json;
  return undefined;
}

/**
 * Verify the log and, when it goes on from a rotated file (its line 1 links to another line's hash,
 * audit --rotate), that file first: line 1 must link to the rotated file's last line.
 */
export async function verifyChain(file: string, headFile = defaultHeadFile(file), onLine?: (l: Line, json: Record<string, unknown> | undefined) => void): Promise<VerifyResult> {
  const first = await firstLine(file);
  const prev = first?.[CHAIN_FIELD];
  const { rotated, notes, gap } = previousLog(file);
  if (typeof prev !== "string" || prev === CHAIN_START) {
    const r = await verifyLog(file, headFile, onLine);
    if (!gap) r.notes.push(...notes); // a stray LOG.2 is no matter of a log that starts the chain
    return r;
  }
  if (!fs.existsSync(rotated)) {
    const r = await verifyLog(file, headFile, onLine);
    r.problems.unshift({ line: 1, what: `line 1 goes on from a rotated log, but ${rotated} is missing: it was removed or renamed` });
    r.notes.push(...notes);
    return r;
  }
  // LOG.1 itself may go on from LOG.2 (an earlier rotation): only the last two files are checked.
  const older = await firstLine(rotated);
  const olderStart = older?.event === "rotate" && typeof older[CHAIN_FIELD] === "string" ? (older[CHAIN_FIELD] as string) : undefined;
  const earlier = await verifyLog(rotated, headFile, undefined, { current: false, start: olderStart });
  if (olderStart) earlier.notes.push(`it goes on from ${String(older!.from ?? "an older rotated log")}, not checked here`);
  const r = await verifyLog(file, headFile, onLine, { start: earlier.head });
  const ours = new Set(r.problems.map((p) => p.what));
  const theirs = earlier.problems.filter((p) => !ours.has(p.what)).map((p) => ({ line: 0, what: `${rotated}: ${p.line ? `line ${p.line}: ` : ""}${p.what}` }));
  if (r.problems.some((p) => p.line === 1) && r.lines > 0 && gap)
    theirs.push({ line: 0, what: `line 1 goes on from a rotated log, but ${gap} is missing and ${file} does not go on from ${rotated} either: it was removed or renamed` });
  else if (r.problems.some((p) => p.line === 1) && r.lines > 0)
    theirs.push({ line: 0, what: `${file} does not go on from the last line of ${rotated}: lines were removed from the end of ${rotated}, or it is not the file rotated` });
  r.problems.unshift(...theirs);
  r.notes.unshift(...notes, ...earlier.notes.map((n) => `${rotated}: ${n}`));
  r.earlier = [earlier];
  return r;
}

/** Append the current head of `file` to `headFile` (root only, mode 0600). */
export async function recordHead(file: string, headFile = defaultHeadFile(file), opts?: VerifyOptions): Promise<{ head: Head; result: VerifyResult }> {
  // The hourly record reads only this file: a rotated log's line 1 is taken at its word (--verify checks it).
  const first = opts ? undefined : await firstLine(file);
  const start = first?.event === "rotate" && typeof first[CHAIN_FIELD] === "string" ? (first[CHAIN_FIELD] as string) : undefined;
  const result = await verifyLog(file, headFile, undefined, opts ?? { start });
  const { dev, ino, lines, bytes } = result;
  const head: Head = { time: new Date().toISOString(), file, dev, ino, lines, bytes, head: result.head };
  const fd = fs.openSync(headFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  try {
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, JSON.stringify(head) + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return { head, result };
}
