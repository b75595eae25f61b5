// `validate-backup verify DIR --signer CERT [--recipient CERT]… [--secret-key KEY [--passphrase-file F]]`
//
// For SOURCE or a restore host holding a copy of the backup (the secret key never goes to REMOTE;
// there it runs without one, and `verify --stored` checks what REMOTE holds). With the secret key,
// every encrypted file is decrypted by gpg in a private home and must be integrity-protected and
// signed by SOURCE's key; every duplicity volume must match the hash its manifest lists, and be
// signed within its set's run. Without it, only the recipients are checked, and the summary says so.
//
// It exits 0 only when every file found was judged, to its last byte, and found good: a run that
// ends any other way (an exception, a promise that never settles, a file left unjudged) exits
// non-zero and names what was not judged.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, type Shape } from "./packets.js";
import { classifyFd } from "./guard.js";
import { ManifestParser } from "./manifest.js";
import { Gpg, GpgMissing, type KeyInfo } from "./gpg.js";
import { judgeDecryption, judgeDetached, STATUSES, type Status, type Problem, type Verdict } from "./verdict.js";
import { setsOf, checkSet, type DupSet, type Judge } from "./sets.js";
import { cleanString, say } from "../audit/sanitize.js";
import { usageText } from "../usage.js";

export { STATUSES, type Status };

export interface Row {
  file: string;
  problems: Problem[];
  notes: string[];
  /** Set once the file's own check finished (with whatever verdict). */
  judged: boolean;
}

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
/** Files checked at once: gpg works on one core each. */
const PARALLEL = 2;

export interface Options {
  dir?: string;
  signers: string[];
  recipients: string[];
  secretKey?: string;
  passphraseFile?: string;
}

const FLAGS: Record<string, (o: Options, v: string) => void> = {
  "--signer": (o, v) => o.signers.push(v),
  "--recipient": (o, v) => o.recipients.push(v),
  "--secret-key": (o, v) => (o.secretKey = v),
  "--passphrase-file": (o, v) => (o.passphraseFile = v),
};

function parseArgs(args: string[]): Options | string {
  const o: Options = { signers: [], recipients: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const set = Object.hasOwn(FLAGS, name) ? FLAGS[name] : undefined;
    if (set) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined || v === "") return `${name} needs a value`;
      set(o, v);
    } else if (a.startsWith("-")) return `unknown option '${cleanString(a, 64)}'`;
    else if (o.dir === undefined) o.dir = a;
    else return `one directory only (got '${cleanString(o.dir, 64)}' and '${cleanString(a, 64)}')`;
  }
  if (o.dir === undefined) return "which directory?";
  if (!o.signers.length) return "--signer CERT is required (SOURCE's signing certificate)";
  if (o.passphraseFile && !o.secretKey) return "--passphrase-file needs --secret-key";
  return o;
}

interface Keys {
  gpg: Gpg;
  signers: KeyInfo;
  /** Key ids an encrypted file must name (the --recipient certificates and the secret key). */
  expect?: { keyIds: Set<string>; names: string[] };
  secret: boolean;
}

function merge(infos: KeyInfo[]): KeyInfo {
  return { primaries: infos.flatMap((i) => i.primaries), fingerprints: new Set(infos.flatMap((i) => [...i.fingerprints])), keyIds: new Set(infos.flatMap((i) => [...i.keyIds])) };
}

async function loadKeys(o: Omit<Options, "dir">): Promise<Keys> {
  const passphrase = o.passphraseFile ? fs.readFileSync(o.passphraseFile, "utf8").split(/\r?\n/)[0] : undefined;
  const gpg = await Gpg.open(passphrase);
  try {
    const signers = merge(o.signers.map((f) => gpg.keyInfo(f)));
    for (const f of o.signers) gpg.import(f);
    const named = [...o.recipients, ...(o.secretKey ? [o.secretKey] : [])].map((f) => gpg.keyInfo(f));
    if (o.secretKey) gpg.import(o.secretKey);
    const expect = named.length ? { keyIds: merge(named).keyIds, names: named.flatMap((i) => i.primaries) } : undefined;
    return { gpg, signers, expect, secret: !!o.secretKey };
  } catch (e) {
    gpg.close();
    throw e;
  }
}

const message = (e: unknown) => ((e as Error)?.message ?? String(e)).replace(/\s+/g, " ").slice(0, 300);
const openRead = (abs: string) => fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);

interface FileCheck {
  /** Node hash algorithm wanted over the stored bytes (duplicity volumes), if any. */
  hash?: string;
  /** Receives the decrypted content: manifests. */
  onPlain?: (c: Uint8Array) => void;
}

class Verifier implements Judge {
  readonly rows = new Map<string, Row>();
  private readonly digests = new Map<string, string>();
  private readonly signed = new Map<string, number[]>();
  constructor(
    private readonly top: string,
    private readonly keys: Keys,
  ) {}

  row(file: string): Row {
    let r = this.rows.get(file);
    if (!r) this.rows.set(file, (r = { file, problems: [], notes: [], judged: false }));
    return r;
  }
  problem(file: string, status: Status, detail: string): void {
    this.row(file).problems.push({ status, detail });
  }
  note(file: string, text: string): void {
    this.row(file).notes.push(text);
  }
  digest(file: string): string | undefined {
    return this.digests.get(file);
  }
  signedAt(file: string): number[] {
    return this.signed.get(file) ?? [];
  }

  /** Every entry below the top, sorted; links and special files are reported, never followed. */
  *walk(rel = ""): Generator<string> {
    const abs = path.join(this.top, rel);
    let names: string[];
    try {
      names = fs.readdirSync(abs).sort();
    } catch (e) {
      this.problem(rel || ".", "UNREADABLE", message(e));
      this.row(rel || ".").judged = true;
      return;
    }
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(path.join(this.top, r));
      if (st.isDirectory()) yield* this.walk(r);
      else if (st.isFile()) yield r;
      else {
        this.problem(r, "UNREADABLE", st.isSymbolicLink() ? "a symbolic link (never followed)" : "not a regular file");
        this.row(r).judged = true;
      }
    }
  }

  /** Judge one file; never throws: whatever happens becomes its verdict. */
  async check(rel: string, want: FileCheck = {}): Promise<void> {
    const row = this.row(rel);
    let fd: number | undefined;
    try {
      fd = openRead(path.join(this.top, rel));
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error("not a regular file");
      const shape = classifyFd(fd, st.size);
      if (shape.kind === "other") this.problem(rel, "NOT ENCRYPTED", describe(shape));
      else if (shape.kind === "signature") await this.detached(rel, fd, shape);
      else await this.encrypted(rel, fd, st.size, shape, want);
    } catch (e) {
      this.problem(rel, "UNREADABLE", message(e));
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
      row.judged = true;
    }
  }

  /** Files gpg judged good, and judged bad, for the summary. */
  good = 0;
  failed = 0;

  private verdict(rel: string, v: Verdict, good: string): void {
    if (v.problems.length) this.failed++;
    else this.good++;
    for (const p of v.problems) this.problem(rel, p.status, p.detail);
    for (const n of v.notes) this.note(rel, n);
    if (v.signedAt.length) this.signed.set(rel, v.signedAt);
    if (!v.problems.length) this.note(rel, good);
  }

  private async encrypted(rel: string, fd: number, size: number, shape: Extract<Shape, { kind: "encrypted" }>, want: FileCheck): Promise<void> {
    const expect = this.keys.expect;
    if (expect) {
      const named = shape.recipients.some((r) => r.keyId !== null && expect.keyIds.has(r.keyId.toUpperCase()));
      // Hidden recipients (gpg --throw-keyids) can only be proven by decrypting with the secret key.
      if (!named && !(shape.recipients.some((r) => r.anonymous) && this.keys.secret))
        this.problem(rel, "NOT ENCRYPTED", `not to an expected recipient: ${describe(shape)}; expected one of ${expect.names.join(", ")}`);
    }
    if (!this.keys.secret) return this.problem(rel, "UNVERIFIED", `${describe(shape)}; contents and signature not checked (no --secret-key)`);
    const r = await this.keys.gpg.run(["--decrypt"], { fd, size, hash: want.hash, onOutput: want.onPlain ? (c) => want.onPlain!(c) : undefined });
    if (r.digest) this.digests.set(rel, r.digest);
    this.verdict(rel, judgeDecryption(r, this.keys.signers, size), `decrypted by gpg, integrity-protected, signed by ${this.keys.signers.primaries.join(", ")}`);
  }

  /** A detached signature X.sig (or .asc) must verify over X with a signer's key (classify refused one over 64 KiB). */
  private async detached(rel: string, sigFd: number, shape: Shape): Promise<void> {
    const target = rel.replace(/\.(sig|asc)$/, "");
    if (target === rel) return this.problem(rel, "NOT ENCRYPTED", `${describe(shape)} that names no signed file (X.sig or X.asc): not a backup file`);
    let fd: number;
    try {
      fd = openRead(path.join(this.top, target));
    } catch (e) {
      return this.problem(rel, "MISSING", `the signed file ${cleanString(target)} cannot be opened (${(e as NodeJS.ErrnoException).code ?? message(e)})`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return this.problem(rel, "MISSING", `the signed file ${cleanString(target)} is not a regular file`);
      // The signature reaches gpg as its fd 5, the signed file on stdin: gpg opens no path of ours.
      const r = await this.keys.gpg.run(["--enable-special-filenames", "--verify", "--", "-&5", "-"], { fd, size: st.size, extraFd: sigFd });
      this.verdict(rel, judgeDetached(r, this.keys.signers, st.size), `a good signature over ${cleanString(target)} by ${this.keys.signers.primaries.join(", ")}`);
    } finally {
      fs.closeSync(fd);
    }
  }
}

export function statusOf(r: Row): Status {
  let worst: Status = "OK";
  for (const p of r.problems) if (STATUSES.indexOf(p.status) < STATUSES.indexOf(worst)) worst = p.status;
  return worst;
}

function table(rows: Row[]): string {
  const width = Math.min(72, Math.max(4, ...rows.map((r) => cleanString(r.file).length)));
  const lines = [`${"STATUS".padEnd(14)} ${"FILE".padEnd(width)}  DETAIL`];
  for (const r of rows) {
    const detail = [...r.problems.map((p) => p.detail), ...r.notes].join("; ");
    lines.push(`${statusOf(r).padEnd(14)} ${cleanString(r.file).padEnd(width)}  ${cleanString(detail, 4096)}`);
  }
  return lines.join("\n");
}

/** Run `task` over `items`, `n` at a time. */
async function pool<T>(items: T[], n: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** Read each set's manifest: with the secret key it is decrypted and judged before its volumes. */
async function readManifests(v: Verifier, sets: DupSet[], keys: Keys): Promise<Map<string, string>> {
  const hashOf = new Map<string, string>();
  await pool(
    sets.filter((s) => s.manifest),
    PARALLEL,
    async (set) => {
      const file = set.manifest!;
      if (!keys.secret) {
        await v.check(file);
        set.untrusted = "the manifest was not read (no --secret-key)";
        return;
      }
      const parser = new ManifestParser();
      await v.check(file, { onPlain: (c) => parser.push(c) });
      parser.finish();
      const row = v.row(file);
      if (row.problems.length) set.untrusted = "its manifest failed (see the manifest)";
      else if (parser.volumes.size === 0) {
        v.problem(file, "DAMAGED", "the manifest lists no volume: a set that cannot be restored");
        set.untrusted = "its manifest lists no volume";
      } else set.listed = parser;
      for (const [n, want] of parser.volumes) {
        const vol = set.vols.get(n);
        if (vol && want?.algorithm) hashOf.set(vol, want.algorithm);
      }
    },
  );
  return hashOf;
}

export interface Result {
  rows: Row[];
  problems: number;
}

/** The keys loaded once, for any number of directories (the tests judge thousands of copies). */
export interface Verify {
  dir(dir: string, out: (s: string) => void, progress?: { current?: string }): Promise<Result>;
  close(): void;
}

export async function openVerify(o: Omit<Options, "dir">): Promise<Verify> {
  const keys = await loadKeys(o);
  return { dir: (dir, out, progress = {}) => judgeDir(keys, dir, out, progress), close: () => keys.gpg.close() };
}

export async function verifyDir(o: Options & { dir: string }, out: (s: string) => void, progress: { current?: string } = {}): Promise<Result> {
  const v = await openVerify(o);
  try {
    return await v.dir(o.dir, out, progress);
  } finally {
    v.close();
  }
}

async function judgeDir(keys: Keys, dir: string, out: (s: string) => void, progress: { current?: string }): Promise<Result> {
  const top = path.resolve(dir);
  if (!fs.statSync(top).isDirectory()) throw new Error(`${dir} is not a directory`);
  const v = new Verifier(top, keys);
  const files = [...v.walk()];
  const sets = setsOf(files);
  const hashOf = await readManifests(v, sets, keys);
  const manifests = new Set(sets.map((s) => s.manifest));
  await pool(
    files.filter((f) => !manifests.has(f)),
    PARALLEL,
    async (f) => {
      progress.current = f;
      await v.check(f, { hash: hashOf.get(f) });
    },
  );
  const matched = sets.flatMap((set) => checkSet(v, set, sets));
  // The guard: every file found has a verdict of its own, or the run fails.
  const unjudged = files.filter((f) => !v.row(f).judged);
  if (unjudged.length) throw new Error(`${unjudged.length} of ${files.length} file(s) were not judged: ${unjudged.slice(0, 5).map((f) => cleanString(f)).join(", ")}`);
  return report(v, files.length, sets, matched, keys, out);
}

/** `matched`: the volumes whose hash matched their manifest (counted where nothing else is wrong with them). */
function report(v: Verifier, found: number, sets: DupSet[], matchedVols: string[], keys: Keys, out: (s: string) => void): Result {
  const rows = [...v.rows.values()].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  out(table(rows));
  const counts = new Map<Status, number>();
  for (const r of rows) counts.set(statusOf(r), (counts.get(statusOf(r)) ?? 0) + 1);
  const problems = rows.filter((r) => statusOf(r) !== "OK").length;
  const vols = sets.reduce((n, s) => n + s.vols.size, 0);
  const signers = keys.signers.primaries.join(", ");
  const matched = matchedVols.filter((f) => statusOf(v.row(f)) === "OK").length;
  out("");
  out(`${found} file(s) found, ${found} judged; ${rows.length} entries: ${STATUSES.filter((s) => counts.get(s)).map((s) => `${counts.get(s)} ${s}`).join(", ")}`);
  if (keys.secret) out(`gpg: ${v.good} file(s) decrypted or verified, integrity-protected and signed by ${signers}; ${v.failed} failed`);
  else out(`gpg: encrypted files NOT decrypted and their signatures NOT checked (no --secret-key); recipients ${keys.expect ? "compared" : "not compared (no --recipient)"}; ${v.good} detached signature(s) good, ${v.failed} failed`);
  out(`duplicity: ${sets.length} set(s); ${matched} of ${vols} volume(s) matched the hash in their set's decrypted, signed manifest`);
  const unverified = counts.get("UNVERIFIED") ?? 0;
  out(!problems ? "verify: OK" : problems === unverified && !keys.secret ? `verify: NOT verified: ${unverified} file(s) can only be judged with --secret-key; no other problem found` : `verify: ${problems} problem(s)`);
  return { rows, problems };
}

export async function verifyMain(args: string[]): Promise<number> {
  const o = parseArgs(args);
  if (typeof o === "string") {
    say(`validate-backup verify: ${o}\n${usageText("verify")}`, "err");
    return 2;
  }
  // No silent success: until the run returns, the process exit status says it failed, and a run
  // that stops early (a promise that never settles leaves an empty event loop) says where.
  let finished = false;
  const progress: { current?: string } = {};
  const at = () => (progress.current ? ` (at ${cleanString(progress.current)})` : "");
  process.exitCode = 3;
  process.once("beforeExit", () => {
    if (finished) return;
    say(`validate-backup verify: the run stopped before every file was judged${at()}: NOT verified`, "err");
    process.exitCode = 3;
  });
  for (const sig of STOP_SIGNALS)
    process.once(sig, () => {
      say(`validate-backup verify: interrupted by ${sig}${at()}: NOT verified`, "err");
      process.exit(128 + os.constants.signals[sig]);
    });
  try {
    const { problems } = await verifyDir(o as Options & { dir: string }, (s) => say(s), progress);
    finished = true;
    return problems ? 1 : 0;
  } catch (e) {
    finished = true;
    say(`validate-backup verify: ${e instanceof GpgMissing ? e.message : `${message(e)}${at()}`}: NOT verified`, "err");
    return e instanceof GpgMissing ? 2 : 3;
  }
}

