// Run the rsync server for one checked request. We build the argv ourselves (absolute binary, no
// shell, minimal environment) and pass the SSH channel through as stdio.
//   pull: rsync reads the live tree, from the root as its working directory.
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
import { removeTree } from "../vault/state.js";
import type { RsyncRequest, RsyncTarget } from "../gate/rsync-args.js";

const ENV = { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" };
const UMASK = 0o027;

// After the client's options on every run (rsync keeps the last value): the session's idle limit
// is ours, whatever --timeout the client sent (0 would mean none).
const timeout = (idleSeconds: number) => `--timeout=${idleSeconds}`;

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
];

/** Where rsync writes a push: staging/t mirrors the root. */
function stagingPath(top: string, t: RsyncTarget): string {
  const p = path.join(top, ...t.v.comps);
  return t.slash ? `${p}/` : p;
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

function spawnRsync(rsyncPath: string, args: string[], cwd: string): Promise<number> {
  if (!path.isAbsolute(rsyncPath)) throw new VbError("IO", `rsync path '${rsyncPath}' is not absolute`);
  const old = process.umask(UMASK);
  let child;
  try {
    child = spawn(rsyncPath, args, { cwd, env: ENV, stdio: "inherit", shell: false });
  } finally {
    process.umask(old);
  }
  // serve.ts ends the process on a signal or at the end of the session's lifetime: rsync goes too.
  const kill = () => child.kill("SIGKILL");
  process.once("exit", kill);
  return new Promise((resolve, reject) => {
    child.once("error", (e) => {
      process.removeListener("exit", kill);
      reject(new VbError("IO", `rsync could not be started: ${e.message}`));
    });
    child.once("exit", (code, signal) => {
      process.removeListener("exit", kill);
      resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0));
    });
  });
}

async function pull(req: RsyncRequest, { session, vault }: Context): Promise<number> {
  checkSources(vault, req.targets);
  const args = ["--server", "--sender", ...req.options, timeout(session.policy.limits.idleSeconds), "--", ".", ...req.targets.map(relPath)];
  session.audit.event("rsync", { direction: "pull", paths: req.targets.map((t) => t.v.display) });
  const code = await spawnRsync(session.policy.rsync.path, args, session.rootReal);
  if (code !== 0) session.audit.event("rsync-exit", { exit: code });
  return code;
}

async function push(req: RsyncRequest, { session, vault }: Context): Promise<number> {
  const target = req.targets[0]!;
  const plan = planDestination(vault, target.v);
  const top = path.join(vault.stagingDir, "t");
  fs.mkdirSync(vault.stagingDir, { mode: 0o700 });
  // Removed at the end whatever happens; if we are killed, by exit handler or the next session.
  const cleanup = () => removeTree(vault.stagingDir);
  process.once("exit", cleanup);
  try {
    fs.mkdirSync(path.join(top, ...plan.mkdir.comps), { recursive: true, mode: 0o700 });
    const args = ["--server", ...req.options, timeout(session.policy.limits.idleSeconds), ...PUSH_OPTIONS, "--", ".", stagingPath(top, target)];
    session.audit.event("rsync", { direction: "push", path: target.v.display });
    const code = await spawnRsync(session.policy.rsync.path, args, vault.stagingDir);
    if (code !== 0) {
      // A failed or killed transfer may have left partial files in staging: publish nothing.
      session.audit.event("rsync-exit", { exit: code, published: 0, reason: "rsync failed: nothing published" });
      return code;
    }
    const single = lstatPlain(stagingPath(top, { ...target, slash: false }))?.isFile() ? target.v : undefined;
    const result = publishStaging(vault, top, single);
    if (single && result.watchedSkip)
      throw result.watchedSkip === "exists"
        ? existsError(single.display, "nothing was stored")
        : new VbError("NOT_ALLOWED", `'${single.display}' was not stored: ${result.watchedSkip}`);
    return 0;
  } finally {
    process.removeListener("exit", cleanup);
    try {
      cleanup();
    } catch {
      /* swept by the next session */
    }
  }
}

function lstatPlain(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

export async function runRsync(plan: { rsync: RsyncRequest }, ctx: Context): Promise<number> {
  return plan.rsync.sender ? pull(plan.rsync, ctx) : push(plan.rsync, ctx);
}
