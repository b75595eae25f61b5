// `validate-backup verify DIR --signer CERT [--recipient CERT]… [--secret-key KEY [--passphrase-file F]]`
//
// For SOURCE or a restore host holding a copy of the backup (the secret key never goes to REMOTE;
// there it runs without one). For every file: is it encrypted, to the expected recipients; with the
// secret key, does it decrypt, unmodified and signed by SOURCE's signing key. For duplicity sets:
// does every volume match the hash in its (decrypted, signed) manifest, is any volume missing or
// extra, is any set's base missing. Every file is read as a stream: memory stays flat for any size.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import type * as OpenPGP from "openpgp";
import { describe, type Shape } from "./packets.js";
import { classifyFd, readCert, loadRecipients, type RecipientSet } from "./guard.js";
import { ManifestParser } from "./manifest.js";
import { parseName, formatTime, type DupName } from "../profile/duplicity.js";

type PGP = typeof OpenPGP;

/** Worst first: a file's status is its worst problem. */
export const STATUSES = ["MISSING", "NOT ENCRYPTED", "HASH MISMATCH", "BAD SIGNATURE", "EXTRA", "UNREADABLE", "OK"] as const;
export type Status = (typeof STATUSES)[number];

export interface Row {
  file: string;
  problems: { status: Status; detail: string }[];
  notes: string[];
}

const CHUNK = 256 * 1024;
const MAX_SMALL_FILE = 1024 * 1024;
const USAGE = "usage: validate-backup verify DIR --signer CERT [--recipient CERT]… [--secret-key KEY [--passphrase-file FILE]]";

interface Options {
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
    } else if (a.startsWith("-")) return `unknown option '${a.slice(0, 64)}'`;
    else if (o.dir === undefined) o.dir = a;
    else return `one directory only (got '${o.dir}' and '${a.slice(0, 64)}')`;
  }
  if (o.dir === undefined) return "which directory?";
  if (!o.signers.length) return "--signer CERT is required (SOURCE's signing certificate)";
  if (o.passphraseFile && !o.secretKey) return "--passphrase-file needs --secret-key";
  return o;
}

interface Keys {
  pgp: PGP;
  signers: OpenPGP.Key[];
  secret: OpenPGP.PrivateKey[];
  /** Recipients a file must name: the --recipient certificates and the secret key. */
  expect: RecipientSet | undefined;
}

const isArmored = (b: Buffer) => b.subarray(0, 64).toString("latin1").trimStart().startsWith("-----");

async function loadKeys(o: Options): Promise<Keys> {
  // Node's native DecompressionStream reads its whole input ahead of its reader (no backpressure
  // through the stream adapter), so a compressed 1 GiB volume would sit in memory; openpgp falls
  // back to its pull-based inflater when constructing one throws a TypeError. Only this process.
  (globalThis as Record<string, unknown>).DecompressionStream = class {
    constructor() {
      throw new TypeError("validate-backup verify: pull-based inflate wanted");
    }
  };
  const pgp = await import("openpgp");
  const signers: OpenPGP.Key[] = [];
  for (const f of o.signers) {
    const b = readCert(f);
    signers.push(...(isArmored(b) ? await pgp.readKeys({ armoredKeys: b.toString("utf8") }) : await pgp.readKeys({ binaryKeys: b })));
  }
  const secret: OpenPGP.PrivateKey[] = [];
  if (o.secretKey) {
    const b = readCert(o.secretKey);
    const keys = isArmored(b) ? await pgp.readPrivateKeys({ armoredKeys: b.toString("utf8") }) : await pgp.readPrivateKeys({ binaryKeys: b });
    const passphrase = o.passphraseFile ? fs.readFileSync(o.passphraseFile, "utf8").replace(/\r?\n$/, "") : undefined;
    for (const k of keys) secret.push(k.isDecrypted() ? k : await pgp.decryptKey({ privateKey: k, passphrase }));
  }
  let expect = o.recipients.length ? await loadRecipients(o.recipients, "--recipient") : undefined;
  if (secret.length) {
    expect ??= { keyIds: new Set(), fingerprints: new Set(), names: [] };
    for (const key of secret) {
      expect.names.push(key.getKeyID().toHex());
      for (const k of key.getKeys()) {
        expect.keyIds.add(k.getKeyID().toHex());
        expect.fingerprints.add(k.getFingerprint());
      }
    }
  }
  return { pgp, signers, secret, expect };
}

/** A file as a pull-driven web stream that also hashes what it hands out. */
class FileSource {
  bytes = 0;
  readonly stream: ReadableStream<Uint8Array>;
  private readonly hash: crypto.Hash | undefined;
  constructor(
    private readonly fh: fs.promises.FileHandle,
    algorithm: string | undefined,
  ) {
    this.hash = algorithm ? crypto.createHash(algorithm) : undefined;
    this.stream = new ReadableStream<Uint8Array>({ pull: (c) => this.pull(c) }, { highWaterMark: 0 });
  }
  private async read(): Promise<Buffer | null> {
    const buf = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await this.fh.read(buf, 0, CHUNK, null);
    if (bytesRead === 0) return null;
    const b = buf.subarray(0, bytesRead);
    this.hash?.update(b);
    this.bytes += bytesRead;
    return b;
  }
  private async pull(c: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const b = await this.read();
    if (b) c.enqueue(b);
    else c.close();
  }
  /** The digest of the whole file, reading whatever the consumer left. */
  async digest(): Promise<string | undefined> {
    if (!this.hash) return undefined;
    while (await this.read());
    return this.hash.digest("hex");
  }
}

async function drain(stream: ReadableStream<Uint8Array>, onChunk?: (c: Uint8Array) => void): Promise<void> {
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onChunk?.(value);
  }
}

const message = (e: unknown) => ((e as Error)?.message ?? String(e)).replace(/\s+/g, " ").slice(0, 300);

/** null when one signature verifies with a signer key, else why not. */
interface SignatureResult {
  keyID: { toHex(): string };
  verified: Promise<unknown>;
}

async function signatureProblem(sigs: SignatureResult[]): Promise<string | null> {
  if (!sigs.length) return "not signed";
  const why: string[] = [];
  for (const s of sigs) {
    try {
      await s.verified;
      return null;
    } catch (e) {
      const id = s.keyID.toHex();
      why.push(/could not find signing key/i.test(message(e)) ? `signed by another key (key id ${id})` : `signature by ${id} does not verify: ${message(e)}`);
    }
  }
  return why.join("; ");
}

interface FileCheck {
  /** Node hash algorithm wanted over the stored bytes (duplicity volumes), if any. */
  hash?: string;
  /** Receives the decrypted (or plain) content: manifests. */
  onPlain?: (c: Uint8Array) => void;
}

class Verifier {
  readonly rows = new Map<string, Row>();
  readonly digests = new Map<string, string>();
  constructor(
    private readonly top: string,
    private readonly keys: Keys,
  ) {}

  row(file: string): Row {
    let r = this.rows.get(file);
    if (!r) this.rows.set(file, (r = { file, problems: [], notes: [] }));
    return r;
  }

  problem(file: string, status: Status, detail: string): void {
    this.row(file).problems.push({ status, detail });
  }

  note(file: string, text: string): void {
    this.row(file).notes.push(text);
  }

  /** Every entry below the top, sorted; links and special files are reported, never followed. */
  *walk(rel = ""): Generator<string> {
    const abs = path.join(this.top, rel);
    let names: string[];
    try {
      names = fs.readdirSync(abs).sort();
    } catch (e) {
      this.problem(rel || ".", "UNREADABLE", message(e));
      return;
    }
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(path.join(this.top, r));
      if (st.isDirectory()) yield* this.walk(r);
      else if (st.isFile()) yield r;
      else this.problem(r, "UNREADABLE", st.isSymbolicLink() ? "a symbolic link (never followed)" : "not a regular file");
    }
  }

  async check(rel: string, want: FileCheck = {}): Promise<void> {
    const row = this.row(rel);
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(path.join(this.top, rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      return this.problem(rel, "UNREADABLE", message(e));
    }
    try {
      const { size } = await fh.stat();
      const shape = classifyFd(fh.fd, size);
      const src = new FileSource(fh, want.hash);
      if (shape.kind === "other") {
        this.problem(rel, "NOT ENCRYPTED", describe(shape));
        if (want.onPlain) await drain(src.stream, want.onPlain);
      } else if (shape.kind === "signature") await this.detached(rel, shape);
      else {
        this.recipients(rel, shape);
        if (this.keys.secret.length) await this.decrypt(rel, shape, src, want);
        else row.notes.push(`${describe(shape)}; signature not checked (no --secret-key)`);
      }
      const digest = await src.digest();
      if (digest) this.digests.set(rel, digest);
    } catch (e) {
      this.problem(rel, "UNREADABLE", message(e));
    } finally {
      await fh.close();
    }
  }

  private recipients(rel: string, shape: Extract<Shape, { kind: "encrypted" }>): void {
    const want = this.keys.expect;
    if (!want) return;
    const named = shape.recipients.some((r) => (r.fingerprint !== undefined ? want.fingerprints.has(r.fingerprint) : r.keyId !== null && want.keyIds.has(r.keyId)));
    // Hidden recipients (gpg --throw-keyids) can only be proven by decrypting with the secret key.
    if (named || (shape.recipients.some((r) => r.anonymous) && this.keys.secret.length)) return;
    this.problem(rel, "NOT ENCRYPTED", `not to an expected recipient: ${describe(shape)}; expected one of ${want.names.join(", ")}`);
  }

  private async decrypt(rel: string, shape: Shape, src: FileSource, want: FileCheck): Promise<void> {
    const { pgp, secret, signers } = this.keys;
    let result: Awaited<ReturnType<typeof pgp.decrypt<OpenPGP.WebStream<Uint8Array>>>>;
    try {
      const msg = shape.armored
        ? await pgp.readMessage({ armoredMessage: src.stream.pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>) as OpenPGP.WebStream<string> })
        : await pgp.readMessage({ binaryMessage: src.stream as OpenPGP.WebStream<Uint8Array> });
      // Plaintext is released before the integrity check at the end: we only hash it, never keep it.
      result = (await pgp.decrypt({ message: msg, decryptionKeys: secret, verificationKeys: signers, format: "binary", config: { allowUnauthenticatedStream: true } })) as typeof result;
    } catch (e) {
      const why = message(e);
      if (/session key/i.test(why)) return this.problem(rel, "NOT ENCRYPTED", `cannot be decrypted with the secret key (${why})`);
      return this.problem(rel, "BAD SIGNATURE", `damaged: ${why}`);
    }
    try {
      await drain(result.data as ReadableStream<Uint8Array>, want.onPlain);
    } catch (e) {
      return this.problem(rel, "BAD SIGNATURE", `modified or damaged: ${message(e)}`);
    }
    const bad = await signatureProblem(result.signatures);
    if (bad) this.problem(rel, "BAD SIGNATURE", bad);
    else this.note(rel, `decrypted, signed by ${result.signatures.map((s) => s.keyID.toHex()).join(", ")}`);
  }

  /** A detached signature X.sig (or .asc) is checked against X with the signer's key. */
  private async detached(rel: string, shape: Shape): Promise<void> {
    const target = rel.replace(/\.(sig|asc)$/, "");
    if (target === rel) return this.note(rel, `${describe(shape)} of no file (name does not end in .sig or .asc)`);
    const { pgp, signers } = this.keys;
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(path.join(this.top, target), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      return this.problem(rel, "MISSING", `the signed file ${target} cannot be opened (${(e as NodeJS.ErrnoException).code ?? message(e)})`);
    }
    try {
      const fd = fs.openSync(path.join(this.top, rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      let bytes: Buffer;
      try {
        if (fs.fstatSync(fd).size > MAX_SMALL_FILE) return this.problem(rel, "UNREADABLE", "a detached signature larger than 1 MiB");
        bytes = fs.readFileSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      const signature = shape.armored ? await pgp.readSignature({ armoredSignature: bytes.toString("utf8") }) : await pgp.readSignature({ binarySignature: bytes });
      const src = new FileSource(fh, undefined);
      const msg = await pgp.createMessage({ binary: src.stream as OpenPGP.WebStream<Uint8Array> });
      const r = await pgp.verify({ message: msg, signature, verificationKeys: signers, format: "binary" });
      await drain(r.data as ReadableStream<Uint8Array>);
      const bad = await signatureProblem(r.signatures);
      if (bad) this.problem(rel, "BAD SIGNATURE", `${bad} (over ${target})`);
      else this.note(rel, `detached signature of ${target}: good`);
    } catch (e) {
      this.problem(rel, "BAD SIGNATURE", `${message(e)} (over ${target})`);
    } finally {
      await fh.close();
    }
  }
}

// ---- duplicity sets ----

interface DupSet {
  dir: string;
  first: DupName;
  manifest?: string;
  sig?: string;
  vols: Map<number, string>;
  /** Volume number -> expected hash, once the manifest was read. */
  listed?: ManifestParser;
}

function setsOf(files: string[]): Map<string, DupSet> {
  const sets = new Map<string, DupSet>();
  for (const rel of files) {
    const dn = parseName(path.posix.basename(rel));
    if (!dn) continue;
    const dir = path.posix.dirname(rel);
    const key = `${dir}\0${dn.setKey}`;
    let set = sets.get(key);
    if (!set) sets.set(key, (set = { dir, first: dn, vols: new Map() }));
    if (dn.role === "manifest") set.manifest = rel;
    else if (dn.role === "sig") set.sig = rel;
    else set.vols.set(dn.vol, rel);
  }
  return sets;
}

function memberName(set: DupSet, role: "manifest" | "sig" | number): string {
  const { kind, start, end } = set.first;
  const when = kind === "full" ? formatTime(start) : `${formatTime(start)}.to.${formatTime(end)}`;
  const gpg = [...set.vols.values(), set.manifest, set.sig].some((n) => n?.endsWith(".gpg")) ? ".gpg" : "";
  const name =
    role === "manifest"
      ? `duplicity-${kind}.${when}.manifest${gpg}`
      : role === "sig"
        ? `${kind === "full" ? "duplicity-full-signatures" : "duplicity-new-signatures"}.${when}.sigtar${gpg}`
        : `duplicity-${kind}.${when}.vol${role}.difftar${gpg}`;
  return set.dir === "." ? name : `${set.dir}/${name}`;
}

function checkSet(v: Verifier, set: DupSet, allSets: DupSet[]): void {
  const label = `${set.first.kind === "full" ? "full" : "incremental"} set ${memberName(set, "manifest").replace(/\.manifest(\.gpg)?$/, "")}`;
  if (!set.manifest) v.problem(memberName(set, "manifest"), "MISSING", `${label} has ${set.vols.size} volume(s) but no manifest: unfinished, or the manifest was removed`);
  if (!set.sig) v.problem(memberName(set, "sig"), "MISSING", `the signature file of the ${label}`);
  if (set.first.kind === "inc" && !allSets.some((s) => s.dir === set.dir && s.first.end === set.first.start && s !== set))
    v.problem(set.manifest ?? memberName(set, "manifest"), "MISSING", `no backup set ends at ${formatTime(set.first.start)}: the chain this incremental continues is missing`);
  const listed = set.listed;
  if (!listed) {
    // Without the manifest's contents, at least volume numbers must run 1..max without a gap.
    const max = Math.max(0, ...set.vols.keys());
    for (let n = 1; n <= max; n++) if (!set.vols.has(n)) v.problem(memberName(set, n), "MISSING", `volume ${n} of ${max} present`);
    return;
  }
  for (const p of listed.problems) v.problem(set.manifest!, "HASH MISMATCH", `manifest: ${p}`);
  for (const [n, want] of listed.volumes) {
    const file = set.vols.get(n);
    if (!file) {
      v.problem(memberName(set, n), "MISSING", `volume ${n} is listed in the manifest`);
      continue;
    }
    if (!want) v.problem(file, "HASH MISMATCH", "the manifest lists no hash for this volume");
    else if (!want.algorithm) v.note(file, `hash ${want.named} in the manifest is not supported: not compared`);
    else {
      const got = v.digests.get(file);
      if (got === undefined) v.note(file, "not hashed (unreadable)");
      else if (got !== want.hex) v.problem(file, "HASH MISMATCH", `${want.named} ${got}, but the manifest says ${want.hex}`);
      else v.note(file, `${want.named} matches the manifest`);
    }
  }
  for (const [n, file] of set.vols) if (!listed.volumes.has(n)) v.problem(file, "EXTRA", `volume ${n} is not listed in the manifest of its set`);
}

// ---- output ----

export function statusOf(r: Row): Status {
  let worst: Status = "OK";
  for (const p of r.problems) if (STATUSES.indexOf(p.status) < STATUSES.indexOf(worst)) worst = p.status;
  return worst;
}

function table(rows: Row[]): string {
  const width = Math.min(72, Math.max(4, ...rows.map((r) => r.file.length)));
  const lines = [`${"STATUS".padEnd(14)} ${"FILE".padEnd(width)}  DETAIL`];
  for (const r of rows) {
    const detail = [...r.problems.map((p) => p.detail), ...r.notes].join("; ");
    lines.push(`${statusOf(r).padEnd(14)} ${r.file.padEnd(width)}  ${detail}`);
  }
  return lines.join("\n");
}

export async function verifyDir(o: Required<Pick<Options, "dir">> & Options, out: (s: string) => void): Promise<{ rows: Row[]; problems: number }> {
  const keys = await loadKeys(o);
  const top = path.resolve(o.dir);
  if (!fs.statSync(top).isDirectory()) throw new Error(`${o.dir} is not a directory`);
  const v = new Verifier(top, keys);
  const files = [...v.walk()];
  const sets = [...setsOf(files).values()];
  const hashOf = new Map<string, string>();
  // Manifests first: they say which hash each volume must have.
  for (const set of sets) {
    if (!set.manifest) continue;
    if (!keys.secret.length && classifyFile(path.join(top, set.manifest)) === "encrypted") {
      v.note(set.manifest, "manifest not read (no --secret-key): volume hashes not checked");
      await v.check(set.manifest);
      continue;
    }
    const parser = new ManifestParser();
    await v.check(set.manifest, { onPlain: (c) => parser.push(c) });
    set.listed = parser.finish();
    if (parser.volumes.size === 0) {
      v.note(set.manifest, "the manifest lists no volume (unreadable?): volume hashes not checked");
      set.listed = undefined;
    }
    for (const [n, want] of parser.volumes) {
      const file = set.vols.get(n);
      if (file && want?.algorithm) hashOf.set(file, want.algorithm);
    }
  }
  const manifests = new Set(sets.map((s) => s.manifest));
  for (const f of files) if (!manifests.has(f)) await v.check(f, { hash: hashOf.get(f) });
  for (const set of sets) checkSet(v, set, sets);

  const rows = [...v.rows.values()].sort((a, b) => a.file.localeCompare(b.file));
  out(table(rows));
  const counts = new Map<Status, number>();
  for (const r of rows) counts.set(statusOf(r), (counts.get(statusOf(r)) ?? 0) + 1);
  const problems = rows.filter((r) => statusOf(r) !== "OK").length;
  const vols = sets.reduce((n, s) => n + s.vols.size, 0);
  out("");
  out(`${rows.length} entries: ${STATUSES.filter((s) => counts.get(s)).map((s) => `${counts.get(s)} ${s}`).join(", ")}`);
  out(`duplicity: ${sets.length} set(s), ${vols} volume(s); manifests ${keys.secret.length ? "decrypted and checked" : "not read (no --secret-key)"}`);
  out(`signatures: ${keys.secret.length ? `checked against ${keys.signers.map((k) => k.getKeyID().toHex()).join(", ")}` : "not checked inside encrypted files (no --secret-key)"}`);
  out(problems ? `verify: ${problems} problem(s)` : "verify: OK");
  return { rows, problems };
}

function classifyFile(file: string): Shape["kind"] {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const size = fs.fstatSync(fd).size;
    return classifyFd(fd, size).kind;
  } finally {
    fs.closeSync(fd);
  }
}

export async function verifyMain(args: string[]): Promise<number> {
  const o = parseArgs(args);
  if (typeof o === "string") {
    process.stderr.write(`validate-backup verify: ${o}\n${USAGE}\n`);
    return 2;
  }
  try {
    const { problems } = await verifyDir(o as Options & { dir: string }, (s) => process.stdout.write(s + "\n"));
    return problems ? 1 : 0;
  } catch (e) {
    process.stderr.write(`validate-backup verify: ${message(e)}\n`);
    return 2;
  }
}
