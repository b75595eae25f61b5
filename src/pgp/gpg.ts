// GnuPG, the tool SOURCE already trusts, run for verify: decryption and signature checks happen at
// gpg's own pace, and the verdict is read from its machine-readable status lines (doc/DETAILS in
// GnuPG's sources), never from its prose. Every run uses a private, temporary GNUPGHOME holding only
// the keys given on the command line: a user's own keyring or trust settings cannot bless a file.
//
// gpg gets an argv, an absolute path and a minimal environment; the file to judge reaches it on a
// pipe that we feed, so we count (and, for duplicity volumes, hash) exactly the bytes it was given
// and notice when it stopped reading before the end.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";

const CANDIDATES = ["/usr/bin/gpg", "/bin/gpg", "/usr/local/bin/gpg"];
const MIN_VERSION = [2, 2];
const CHUNK = 256 * 1024;
/** What of gpg's stderr is kept for a message: the last lines only, whatever it writes. */
const STDERR_KEEP = 4096;
/** A status line longer than this is cut: a user id in GOODSIG is the longest we expect. */
const STATUS_LINE_MAX = 4096;
/** Status lines kept per run: a hostile file cannot make gpg say more than a few per packet. */
const STATUS_LINES_MAX = 4096;

export class GpgMissing extends Error {}

export interface Status {
  /** Keyword -> the arguments of each line with that keyword, in order. */
  readonly lines: Map<string, string[][]>;
}

export interface RunResult {
  exit: number | null;
  signal: NodeJS.Signals | null;
  status: Status;
  /** The last lines gpg wrote on stderr, for a message a person reads. */
  stderr: string;
  /** Bytes of the file read (all of them unless reading failed). */
  bytes: number;
  /** Did gpg take the whole file? False when it closed its input before the end. */
  complete: boolean;
  /** Hex digest of the bytes fed, when asked for. */
  digest?: string;
}

export interface RunInput {
  fd: number;
  size: number;
  hash?: string;
  /** Receives gpg's output (the plaintext of a decryption), chunk by chunk; else it is discarded. */
  onOutput?: (chunk: Buffer) => void;
  /** An extra descriptor for gpg, as fd 5 (a detached signature file). */
  extraFd?: number;
}

export interface KeyInfo {
  /** Primary fingerprints, upper-case hex. */
  primaries: string[];
  /** Fingerprints and 16-digit key ids of every key and subkey, upper-case hex. */
  fingerprints: Set<string>;
  keyIds: Set<string>;
}

function findGpg(): string {
  for (const p of CANDIDATES) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new GpgMissing(`GnuPG (gpg) is not installed (looked in ${CANDIDATES.join(", ")}): install the package 'gnupg' (apt-get install gnupg)`);
}

/** null when `gpg --version` printed a GnuPG verify can use, else a line that says what to install. */
export function versionProblem(bin: string, versionText: string): string | null {
  const m = /^gpg \(GnuPG\) (\d+)\.(\d+)/m.exec(versionText);
  const [major, minor] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (m && (major > MIN_VERSION[0]! || (major === MIN_VERSION[0] && minor >= MIN_VERSION[1]!))) return null;
  return `${bin} is ${m ? `GnuPG ${major}.${minor}` : "not a GnuPG verify understands"}; verify needs GnuPG ${MIN_VERSION.join(".")} or newer (the package 'gnupg')`;
}

export function parseStatus(text: string): Status {
  const lines = new Map<string, string[][]>();
  for (const raw of text.split("\n").slice(0, STATUS_LINES_MAX)) {
    const line = raw.slice(0, STATUS_LINE_MAX);
    if (!line.startsWith("[GNUPG:] ")) continue;
    const [key, ...args] = line.slice(9).split(" ");
    if (!key) continue;
    const list = lines.get(key);
    if (list) list.push(args);
    else lines.set(key, [args]);
  }
  return { lines };
}

/** Homes not closed yet: a run ended by a signal (verify exits at once) must not leave an agent behind. */
const OPEN = new Set<Gpg>();
process.on("exit", () => {
  for (const g of OPEN) {
    try {
      g.close();
    } catch {
      /* one home that cannot be removed must not keep the others' agents running */
    }
  }
});

/** A private GnuPG home with only the given keys; close() stops its agent and removes it. */
export class Gpg {
  private constructor(
    readonly bin: string,
    readonly home: string,
    private readonly passphrase: string | undefined,
  ) {
    OPEN.add(this);
  }

  static async open(passphrase?: string): Promise<Gpg> {
    const bin = findGpg();
    const v = spawnSync(bin, ["--version"], { env: { LC_ALL: "C", PATH: "/usr/bin:/bin" }, encoding: "utf8", timeout: 30_000 });
    const old = versionProblem(bin, v.stdout ?? "");
    if (old) throw new GpgMissing(old);
    // Short: gpg-agent's socket lives here when /run/user/UID does not exist (sun_path is 108 bytes).
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "vb-gpg-"));
    fs.chmodSync(home, 0o700);
    return new Gpg(bin, home, passphrase);
  }

  private env(): NodeJS.ProcessEnv {
    return { GNUPGHOME: this.home, PATH: "/usr/bin:/bin", LC_ALL: "C" };
  }

  private base(): string[] {
    // --trust-model always: the keys here are the ones the admin named; the web of trust is not asked.
    return ["--batch", "--no-tty", "--no-options", "--no-auto-key-locate", "--no-auto-key-retrieve", "--trust-model", "always", "--pinentry-mode", "loopback"];
  }

  /** Key and subkey fingerprints of a certificate or key file, without importing it. */
  keyInfo(file: string): KeyInfo {
    const r = spawnSync(this.bin, [...this.base(), "--with-colons", "--import-options", "show-only", "--import", "--", file], {
      env: this.env(),
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    const info: KeyInfo = { primaries: [], fingerprints: new Set(), keyIds: new Set() };
    let last = "";
    for (const line of (r.stdout ?? "").split("\n")) {
      const f = line.split(":");
      if (["pub", "sec", "sub", "ssb"].includes(f[0]!)) {
        last = f[0]!;
        if (f[4]) info.keyIds.add(f[4].toUpperCase());
      } else if (f[0] === "fpr" && f[9]) {
        info.fingerprints.add(f[9].toUpperCase());
        if (last === "pub" || last === "sec") info.primaries.push(f[9].toUpperCase());
        last = "";
      }
    }
    if (r.status !== 0 || !info.primaries.length) throw new Error(`${file} holds no OpenPGP key gpg can read (${lastLine(r.stderr ?? "") || `exit ${r.status}`})`);
    return info;
  }

  /** Import certificates and secret keys into the private home. */
  import(file: string): void {
    const r = spawnSync(this.bin, [...this.base(), "--import", "--", file], { env: this.env(), encoding: "utf8", stdio: ["ignore", "ignore", "pipe"], timeout: 120_000 });
    if (r.status !== 0) throw new Error(`gpg could not import ${file}: ${lastLine(r.stderr ?? "") || `exit ${r.status}`}`);
  }

  /** Run gpg with `args` on the input described by `input`, fed through a pipe. */
  run(args: string[], input: RunInput): Promise<RunResult> {
    const pass = this.passphrase !== undefined;
    const stdio: ("pipe" | "ignore" | number)[] = ["pipe", input.onOutput ? "pipe" : "ignore", "pipe", "pipe", pass ? "pipe" : "ignore"];
    if (input.extraFd !== undefined) stdio.push(input.extraFd);
    const argv = [...this.base(), "--status-fd", "3", ...(pass ? ["--passphrase-fd", "4"] : []), ...args];
    const child = spawn(this.bin, argv, { env: this.env(), stdio });
    let statusText = "";
    let stderr = "";
    child.stdio[3]!.on("data", (d: Buffer) => {
      if (statusText.length < STATUS_LINE_MAX * STATUS_LINES_MAX) statusText += d.toString("latin1");
    });
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString("utf8")).slice(-STDERR_KEEP)));
    if (input.onOutput) child.stdout!.on("data", input.onOutput);
    if (pass) {
      const p = child.stdio[4] as NodeJS.WritableStream;
      p.on("error", () => {}); // gpg need not read it (an unprotected key)
      p.end(this.passphrase + "\n");
    }
    const closed = new Promise<{ exit: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (exit, signal) => resolve({ exit, signal }));
    });
    const fed = feed(input, child.stdin!);
    return Promise.all([closed, fed]).then(([c, f]) => ({ ...c, status: parseStatus(statusText), stderr, bytes: f.bytes, complete: f.complete, digest: f.digest }));
  }

  /** Stop the private home's agent and remove the home. */
  close(): void {
    if (!OPEN.delete(this)) return;
    const conf = path.join(path.dirname(this.bin), "gpgconf");
    spawnSync(conf, ["--kill", "all"], { env: this.env(), stdio: "ignore", timeout: 30_000 });
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

/**
 * Write the file to gpg's stdin, hashing every byte of it. When gpg closes its end early (EPIPE) the
 * rest is still hashed, and `complete` says that gpg did not take the whole file.
 */
async function feed(input: RunInput, stdin: NodeJS.WritableStream): Promise<{ bytes: number; complete: boolean; digest?: string }> {
  const hash = input.hash ? crypto.createHash(input.hash) : undefined;
  let closed = false;
  stdin.on("error", () => (closed = true));
  let buf = Buffer.allocUnsafe(CHUNK);
  let bytes = 0;
  try {
    for (;;) {
      const n = await new Promise<number>((res, rej) => fs.read(input.fd, buf, 0, CHUNK, bytes, (e, got) => (e ? rej(e) : res(got))));
      if (n === 0) break;
      bytes += n;
      if (closed) {
        if (!hash) break;
        hash.update(buf.subarray(0, n));
        continue;
      }
      const chunk = buf.subarray(0, n);
      hash?.update(chunk);
      // A chunk the stream took without asking us to wait may still be queued: the next read needs
      // a buffer of its own. One it made us wait for is written out by then, and the buffer is free.
      if (stdin.write(chunk)) buf = Buffer.allocUnsafe(CHUNK);
      else await drained(stdin);
    }
  } finally {
    stdin.end();
  }
  return { bytes, complete: !closed, digest: hash?.digest("hex") };
}

function drained(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((res) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      res();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

export function lastLine(s: string): string {
  return s.trim().split("\n").filter((l) => l.trim()).pop()?.trim().slice(0, 300) ?? "";
}
