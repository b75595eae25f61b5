// Run the rsync server for one checked request. We build the argv ourselves (absolute binary, no
// shell, minimal environment) and pass the SSH channel through as stdio.
//   pull: rsync reads the live tree, from the root as its working directory, in a sandbox (jail.ts)
//         where nothing but /usr and what the key may pull exists.
//   push: rsync never sees the live tree; it receives into this session's staging directory and,
//         only if it succeeds, the vault publishes what arrived.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { VbError, existsError } from "../errors.js";
import type { Context } from "../handler.js";
import type { Vault } from "../vault/vault.js";
import { vpath, type VPath } from "../vault/paths.js";
import { publishStaging } from "../vault/publish.js";
import { toVbError } from "../handler.js";
import type { RsyncRequest, RsyncTarget } from "../gate/rsync-args.js";
import { jailCommand, jailRefusal, JailReport } from "./jail.js";
import { throttleFor, rsyncBwlimit, type Throttle } from "../throttle.js";

const ENV = { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" };
/** rsync's own RERR_PARTIAL, "some files were not transferred": a push that left a sent file unstored. */
const PARTIAL = 23;
const UMASK = 0o027;

// After the client's options on every run (rsync keeps the last value): the session's idle limit
// is ours, whatever --timeout the client sent (0 would mean none).
const timeout = (idleSeconds: number) => `--timeout=${idleSeconds}`;

/**
 * The key's bandwidth limit as rsync's --bwlimit (KiB/s), after the client's options so it wins,
 * unless the client asked for less. rsync paces only what it writes: that holds a pull, where the
 * server sends; a push is paced by us instead, on its way in (see spawnRsync).
 */
function bwlimit(options: readonly string[], bytesPerSecond: number | undefined): string[] {
  if (bytesPerSecond === undefined) return [];
  const ours = rsyncBwlimit(bytesPerSecond);
  const asked = askedKiB(options.filter((o) => o.startsWith("--bwlimit=")).at(-1)?.slice("--bwlimit=".length));
  return [`--bwlimit=${asked > 0 && asked < ours ? Math.ceil(asked) : ours}`];
}

/** The client's --bwlimit in KiB/s (rsync's unit; K, M, G multiply by 1024); 0 for none or unlimited. */
function askedKiB(v: string | undefined): number {
  const m = v === undefined ? null : /^(\d+(?:\.\d+)?)([KMG])?$/i.exec(v);
  if (!m) return 0;
  return Number(m[1]) * 1024 ** (m[2] ? "KMG".indexOf(m[2].toUpperCase()) : 0);
}

// Added to every push, after the client's options (the last value wins in rsync). No
// --compare-dest: rsync resolved <live>/<client's relative name> by path, through any link on the
// way, so a push told the client whether a file outside the root existed and matched (with -c, its
// content). Unchanged files are sent again instead, and the publisher skips names that exist.
const PUSH_OPTIONS = [
  "--ignore-existing",
  "--max-delete=-1",
  // A link the client sends is stored as an unusable one, so rsync itself can never write through it.
  "--munge-links",
  // No delta transfer: files that differ from the live ones are discarded anyway, and rsync must not
  // read live files as a basis and send their block checksums to the client.
  "--whole-file",
  // Staged directories stay walkable and removable; file modes are masked again when published.
  "--chmod=Du=rwx,Dgo=,Fu=rw,Fg-wx,Fo=",
  // Every message on stderr, where run.ts cuts our internal paths out of it (see filterLines), and
  // the "is over max-size" line, which tells us of a file --max-size skipped.
  "--msgs2stderr",
  "--info=skip1",
];
/** rsync's generator.c, when --max-size skips a file (with --info=skip1). */
const OVER_MAX_SIZE = /^(.*) is over max-size$/;
/** How often the staging tree is measured against the quota while rsync receives. */
const POLL_MS = 500;
const NAMED = 20;

interface Unstored {
  path: string;
  reason: string;
}

function relPath(t: RsyncTarget): string {
  const p = t.v.comps.length ? t.v.comps.join("/") : ".";
  return t.slash && p !== "." ? `${p}/` : p;
}

function lstatOrNull(vault: Vault, v: VPath): fs.Stats | null {
  try {
    return vault.lstat(v);
  } catch (e) {
    if (e instanceof VbError && e.code === "NOT_FOUND") return null;
    throw e;
  }
}

function notALink(st: fs.Stats, v: VPath): void {
  if (st.isSymbolicLink()) throw new VbError("OUTSIDE_ROOT", `'${v.display}' is a symbolic link, which is never followed`);
}

/** A pull reads only what exists, through no link. */
function checkSources(vault: Vault, targets: RsyncTarget[]): void {
  for (const { v } of targets) {
    const st = lstatOrNull(vault, v);
    if (!st) throw new VbError("NOT_FOUND", `'${v.display}': no such file or directory`);
    notALink(st, v);
    if (!st.isFile() && !st.isDirectory()) throw new VbError("NOT_ALLOWED", `'${v.display}': not a regular file or directory`);
    // pull: "metadata" lets a few named files be read; rsync reads all of a directory it is given.
    if (!vault.canRead(v))
      throw new VbError("NOT_ALLOWED", `'${v.display}' cannot be read with this key (pull: ${String(vault.session.policy.pull)}${st.isDirectory() ? "; name the files one by one" : ""})`);
  }
}

/**
 * The destination of a push decides the staging layout: an existing directory is mirrored, a new
 * name gets only its parent. An existing file can never be replaced.
 */
function planDestination(vault: Vault, v: VPath): { mkdir: VPath } {
  const st = lstatOrNull(vault, v);
  if (st) {
    notALink(st, v);
    if (st.isDirectory()) return { mkdir: v };
    // The replace policy may let this name be sent again (duplicity resuming); the vault decides
    // when publishing, and a refusal there still fails the session loudly.
    if (!(st.isFile() && vault.rules.mayReplace(v.comps[v.comps.length - 1]!)))
      throw existsError(v.display);
  }
  for (let i = 1; i < v.comps.length; i++) {
    const up = vpath(v.comps.slice(0, i));
    const ust = lstatOrNull(vault, up);
    if (!ust) break;
    notALink(ust, up);
    if (!ust.isDirectory()) throw new VbError("EXISTS", `'${up.display}' exists and is not a directory`);
  }
  return { mkdir: vpath(v.comps.slice(0, -1)) };
}

/**
 * rsync's error messages name files by their full path ("write failed on \"/srv/…state/staging/…\"").
 * A push runs with `--msgs2stderr` (every message on stderr, none inside the protocol stream) and its
 * stderr passes through `line` here, which may rewrite each line, before it reaches the client.
 */
function filterLines(from: NodeJS.ReadableStream, line: (text: string) => string | null): void {
  let rest = "";
  from.setEncoding("utf8");
  const pass = (l: string, end: string) => {
    const out = line(l);
    if (out !== null) process.stderr.write(`${out}${end}`);
  };
  from.on("data", (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const l of lines) pass(l, "\n");
  });
  from.on("end", () => rest && pass(rest, ""));
}

interface SpawnOptions {
  /** Each line rsync writes on stderr passes through here; null keeps it back. */
  line?: (text: string) => string | null;
  poll?: (kill: () => void) => void;
  /** fd 3 of the child, read as text (the sandbox's report). */
  report?: (chunk: string) => void;
  /** What the client sends passes through us at this pace (a push under a bandwidth limit). */
  throttle?: Throttle;
}

function spawnRsync(argv: string[], cwd: string, opts: SpawnOptions = {}): Promise<number> {
  if (!path.isAbsolute(argv[0]!)) throw new VbError("IO", `rsync path '${argv[0]}' is not absolute`);
  const old = process.umask(UMASK);
  let child;
  try {
    // Its own process group: rsync forks (generator and receiver), and a kill must reach both.
    const stdio = [opts.throttle ? "pipe" : "inherit", "inherit", opts.line ? "pipe" : "inherit", ...(opts.report ? ["pipe" as const] : [])] as const;
    child = spawn(argv[0]!, argv.slice(1), { cwd, env: ENV, stdio: [...stdio], shell: false, detached: true });
  } finally {
    process.umask(old);
  }
  if (opts.line) filterLines(child.stderr!, opts.line);
  if (opts.report) {
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.setEncoding("utf8");
    fd3.on("data", opts.report);
  }
  const stopPacing = opts.throttle && paceInto(process.stdin, child.stdin!, opts.throttle);
  // serve.ts ends the process on a signal or at the end of the session's lifetime: rsync goes too.
  const kill = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL"); // the group is gone already
    }
  };
  // First among the exit hooks: rsync stops before the vault removes the staging it writes into.
  process.prependOnceListener("exit", kill);
  const poller = opts.poll && setInterval(() => opts.poll!(kill), POLL_MS);
  return new Promise((resolve, reject) => {
    const done = () => {
      process.removeListener("exit", kill);
      if (poller) clearInterval(poller);
      if (stopPacing) stopPacing(); // else the open stdin keeps the session from ending
    };
    child.once("error", (e) => {
      done();
      reject(new VbError("IO", `rsync could not be started: ${e.message}`));
    });
    // "close", not "exit": the last of its stderr has been passed on.
    child.once("close", (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0));
    });
  });
}

/**
 * Copy `from` into `to` no faster than the throttle allows: reading stops while it is in debt, so
 * the client is held back by the SSH channel's flow control. Memory: one chunk at a time.
 */
function paceInto(from: NodeJS.ReadStream, to: NodeJS.WritableStream, throttle: Throttle): () => void {
  let full = false;
  let waitMs = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const resume = () => {
    if (!full && waitMs === 0 && !stopped) from.resume();
  };
  to.on("error", () => from.pause()); // rsync exited: its exit status tells the rest
  to.on("drain", () => {
    full = false;
    resume();
  });
  from.on("data", (chunk: Buffer) => {
    full = !to.write(chunk);
    waitMs = throttle.spend(chunk.length);
    if (!full && waitMs === 0) return;
    from.pause();
    if (waitMs > 0)
      timer = setTimeout(() => {
        waitMs = 0;
        resume();
      }, waitMs);
  });
  from.once("end", () => to.end());
  return () => {
    stopped = true;
    clearTimeout(timer);
    from.destroy();
  };
}

/**
 * What a pull's sandbox holds besides /usr: the root when the key may read all of it, else only the
 * sources themselves (pull: "metadata"), so that no filter rule can open a volume beside them.
 */
function pullBinds(vault: Vault, session: Context["session"], targets: RsyncTarget[]): string[] {
  if (vault.canRead(vpath([]))) return [session.rootReal];
  const paths = [...new Set(targets.map((t) => path.join(session.rootReal, ...t.v.comps)))].sort();
  // A source inside another is there already.
  return paths.filter((p) => !paths.some((q) => q !== p && p.startsWith(`${q}/`)));
}

async function pull(req: RsyncRequest, { session, vault }: Context): Promise<number> {
  checkSources(vault, req.targets);
  const { limits } = session.policy;
  const args = ["--server", "--sender", ...req.options, timeout(limits.idleSeconds), ...bwlimit(req.options, limits.bytesPerSecond), "--", ".", ...req.targets.map(relPath)];
  session.audit.event("rsync", { direction: "pull", paths: req.targets.map((t) => t.v.display), sandbox: true });
  // The sandbox's new root is mounted (in its namespace only) on a directory of this session's own.
  const report = new JailReport();
  const code = await vault.withStaging((newRoot) => {
    const argv = jailCommand({ newRoot, binds: pullBinds(vault, session, req.targets), cwd: session.rootReal, argv: [session.policy.rsync.path, ...args] });
    return spawnRsync(argv, "/", { line: (l) => report.hold(l), report: (c) => report.onReport(c) });
  });
  if (!report.ready) throw jailRefusal(report.cause(code));
  // Lines that came before the report did (two pipes, either may be read first).
  if (report.held()) process.stderr.write(report.held());
  if (code !== 0) session.audit.event("rsync-exit", { exit: code });
  return code;
}

async function push(req: RsyncRequest, { session, vault }: Context): Promise<number> {
  const target = req.targets[0]!;
  const plan = planDestination(vault, target.v);
  // Removed at the end whatever happens; if we are killed, by exit handler or the next session.
  return vault.withStaging(async (staging) => {
    const top = path.join(staging, "t");
    fs.mkdirSync(path.join(top, ...plan.mkdir.comps), { recursive: true, mode: 0o700 });
    // staging/t mirrors the root, and rsync runs in it with the destination as the client wrote it
    // (relative): its messages ("created directory new/enc") name no internal path.
    // --max-size: rsync does not even receive a file over the limit (it once staged 300 MB of one).
    // Ours comes last and wins, so it is the smaller of the limit and what the client asked.
    const { limits } = session.policy;
    const maxSize = Math.min(limits.maxFileBytes, askedMaxSize(req.options));
    const args = ["--server", ...req.options, timeout(limits.idleSeconds), ...bwlimit(req.options, limits.bytesPerSecond), ...PUSH_OPTIONS, `--max-size=${maxSize}`, "--", ".", relPath(target)];
    session.audit.event("rsync", { direction: "push", path: target.v.display });
    const unstored: Unstored[] = [];
    let overSize = 0;
    const hide: Array<[string, string]> = [[`${top}/`, ""], [top, "."], [session.policy.state, "[state]"]];
    const line = (text: string): string => {
      // Our internal paths never reach the client.
      for (const [p, by] of hide) text = text.split(p).join(by);
      // --max-size makes rsync skip a file without failing: we make it count (exit 23).
      const over = OVER_MAX_SIZE.exec(text);
      if (over) {
        const reason = `larger than the limit of ${maxSize} bytes per file`;
        session.counters.skipped++;
        session.audit.event("skipped", { path: over[1]!, reason, via: "rsync" });
        if (overSize++ < NAMED) unstored.push({ path: over[1]!, reason });
      }
      return text;
    };
    // The staging tree counts against the quota and the reserve while it fills: past either, rsync is stopped.
    let refused: VbError | undefined;
    const poll = (kill: () => void) => {
      try {
        vault.quota.measureStaging(top);
      } catch (e) {
        refused ??= toVbError(e);
        kill();
      }
    };
    const code = await spawnRsync([session.policy.rsync.path, ...args], top, { line, poll, throttle: throttleFor(limits) });
    if (!refused && code === 0)
      try {
        vault.quota.measureStaging(top); // what arrived since the last look
      } catch (e) {
        refused = toVbError(e);
      }
    if (refused) {
      say(refused.message);
      session.audit.event("rsync-exit", { exit: PARTIAL, published: 0, code: refused.code, reason: `${refused.message}: nothing published` });
      return PARTIAL;
    }
    if (code !== 0) {
      // A failed or killed transfer may have left partial files in staging: publish nothing.
      session.audit.event("rsync-exit", { exit: code, published: 0, reason: "rsync failed: nothing published" });
      return code;
    }
    const result = publishStaging(vault, top);
    const count = result.unstored.count + overSize;
    if (!count) return 0;
    // Every file sent and not stored fails the push (duplicity must not record a volume that is not
    // there), but for an existing name with the same bytes, which --ignore-existing skips anyway.
    const named = [...unstored, ...result.unstored.first].slice(0, NAMED);
    for (const u of named) say(`'${u.path}' was not stored: ${u.reason}`);
    if (count > named.length) say(`${count - named.length} more files were not stored (the audit log names them)`);
    session.audit.event("rsync-exit", { exit: PARTIAL, published: result.published, unstored: count, reason: "files sent were not stored" });
    return PARTIAL;
  });
}

/** The client's own --max-size in bytes (rsync's units: K = 1024, KB = 1000, a trailing +1/-1); Infinity if none. */
function askedMaxSize(options: readonly string[]): number {
  const v = options.filter((o) => o.startsWith("--max-size=")).at(-1)?.slice("--max-size=".length);
  const m = v === undefined ? null : /^(\d+(?:\.\d+)?)(?:([KMGTP])(i?B)?|B)?([+-]1)?$/i.exec(v);
  if (!m) return Infinity;
  const base = m[3]?.toUpperCase() === "B" ? 1000 : 1024;
  const n = Math.floor(Number(m[1]) * base ** (m[2] ? "KMGTP".indexOf(m[2].toUpperCase()) + 1 : 0)) + Number(m[4] ?? 0);
  return Number.isSafeInteger(n) && n >= 0 ? n : Infinity;
}

function say(message: string): void {
  process.stderr.write(`validate-backup: rsync: ${message}\n`);
}

export async function runRsync(plan: { rsync: RsyncRequest }, ctx: Context): Promise<number> {
  return plan.rsync.sender ? pull(plan.rsync, ctx) : push(plan.rsync, ctx);
}
