// The step of a pull that runs inside its own user and mount namespace (started by jail.ts through
// `unshare --user --map-current-user --mount --keep-caps`): build a new root on a tmpfs holding
// read-only binds of /usr (and rsync, if it lies elsewhere) and of what the key may pull, each at its
// own absolute path, then run rsync chrooted into it without any capability. Whatever a client's
// filter rules make rsync open (`merge /etc/…`, a `dir-merge` naming an absolute file), only those
// binds exist to be found.
// Its own bundle (dist/app/jail-entry.js): node's modules only, started once per pull.
// Reports on fd 3: "ready" once rsync is about to start, or why the sandbox could not be built.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { JAIL_TOOLS, JAIL_ENV, READY, type JailSpec } from "./jail-spec.js";

/** Top-level names a program's loader may go through: mirrored as links (merged /usr) or bound. */
const TOP_LEVEL = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
// Every option a bind may not lose is given: a remount cannot clear a flag the namespace inherited
// locked (a root on a noexec filesystem made "ro" alone fail); atime flags are kept when none is given.
const PROGRAM_OPTIONS = "rbind,ro,nosuid,nodev";
const DATA_OPTIONS = `${PROGRAM_OPTIONS},noexec`;
const REPORT_FD = 3;

/** A step that failed, its message already what the client and the audit log are told. */
class Failed extends Error {}

function mount(args: string[]): void {
  const r = spawnSync(JAIL_TOOLS.mount, args, { env: JAIL_ENV, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (r.status !== 0) throw new Failed(`${JAIL_TOOLS.mount} ${args.join(" ")}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
}

/** fstab's own escape (\ooo): a path may hold any byte but NUL. */
function fstabField(p: string): string {
  return p.replace(/[^A-Za-z0-9/._+@:-]/g, (c) => [...Buffer.from(c)].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join(""));
}

/** The mount point of a bind, made in the new root: a directory or an empty file, like its source. */
function mountPoint(newRoot: string, source: string): string {
  const at = path.join(newRoot, source);
  if (fs.lstatSync(source).isDirectory()) fs.mkdirSync(at, { recursive: true });
  else {
    fs.mkdirSync(path.dirname(at), { recursive: true });
    fs.writeFileSync(at, "");
  }
  return at;
}

function build(spec: JailSpec): void {
  const { newRoot } = spec;
  mount(["-t", "tmpfs", "-o", "size=1m,mode=0755,nosuid,nodev,noexec", "vb-jail", newRoot]);
  const programs = ["/usr"];
  for (const name of TOP_LEVEL) {
    const st = fs.lstatSync(`/${name}`, { throwIfNoEntry: false });
    if (st?.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(`/${name}`), path.join(newRoot, name));
    else if (st?.isDirectory()) programs.push(`/${name}`);
  }
  const rsync = spec.argv[0]!;
  if (!rsync.startsWith("/usr/")) programs.push(rsync);
  const binds = [...programs.map((p) => [p, PROGRAM_OPTIONS] as const), ...spec.binds.map((p) => [p, DATA_OPTIONS] as const)];
  // One mount(8) for every bind: a process per bind cost ~10 ms each on a busy machine.
  const lines = binds.map(([b, options]) => `${fstabField(b)} ${fstabField(mountPoint(newRoot, b))} none ${options} 0 0\n`);
  const fstab = path.join(newRoot, ".fstab");
  fs.writeFileSync(fstab, lines.join(""));
  mount(["--all", "--fstab", fstab]);
  fs.unlinkSync(fstab);
  mount(["-o", "remount,ro", newRoot]);
}

function main(): void {
  const spec = JSON.parse(process.argv[2] ?? "") as JailSpec;
  try {
    build(spec);
  } catch (e) {
    // The new root's path is the session's staging directory: an internal path the client never sees.
    const said = e instanceof Failed ? e.message : `the sandbox could not be built: ${(e as Error).message}`;
    fs.writeSync(REPORT_FD, said.split(spec.newRoot).join("[sandbox]"));
    process.exit(1);
  }
  fs.writeSync(REPORT_FD, READY);
  fs.closeSync(REPORT_FD);
  // chroot and chdir by unshare (coreutils chroot always goes to "/"), then setpriv drops every
  // capability the namespace gave us: rsync runs as the account, with nothing more.
  const child = spawn(
    JAIL_TOOLS.unshare,
    [`--root=${spec.newRoot}`, `--wd=${spec.cwd}`, "--", JAIL_TOOLS.setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", ...spec.argv],
    { env: JAIL_ENV, stdio: "inherit" },
  );
  child.on("error", (e) => {
    process.stderr.write(`validate-backup: rsync could not be started: ${e.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
}

main();
