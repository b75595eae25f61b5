// Test fixtures: an unprivileged user to run the gate as (root ignores file modes and would hide
// bugs), sandboxes with a root, its state, a sibling canary directory and a fake ~/.ssh, byte-exact
// snapshots of all of them, and a way to run the real binary.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync, type SpawnOptions } from "node:child_process";
import { fileURLToPath } from "node:url";

// Tests run transpiled from dist/test/helpers/; the fixtures they name (fake-ssh, the paramiko
// script) stay in test/helpers/ of the source tree.
const HERE = path.dirname(fileURLToPath(import.meta.url));
export const TOP = path.resolve(HERE, path.basename(path.resolve(HERE, "../..")) === "dist" ? "../../.." : "../..");
export const BIN = path.join(TOP, "bin/validate-backup");
export const FAKE_SSH = path.join(TOP, "test/helpers/fake-ssh");
export const TEST_USER = "vbtest";

export const isRoot = process.getuid?.() === 0;

type GateIds = { uid: number; gid: number; name: string | undefined };
let ids: GateIds | undefined;

/** uid/gid the gate runs as: the test user when we are root (created on first use), else us. */
export function gateIds(): GateIds {
  // Asked once per process: every sandbox asks, and two `id` processes each time added up.
  ids ??= lookUpIds();
  return ids;
}

function lookUpIds(): GateIds {
  if (!isRoot) return { uid: process.getuid!(), gid: process.getgid!(), name: undefined };
  let r = spawnSync("id", ["-u", TEST_USER], { encoding: "utf8" });
  if (r.status !== 0) {
    spawnSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER], { stdio: "ignore" });
    r = spawnSync("id", ["-u", TEST_USER], { encoding: "utf8" });
  }
  const uid = Number(r.stdout.trim());
  const gid = Number(spawnSync("id", ["-g", TEST_USER], { encoding: "utf8" }).stdout.trim());
  return { uid, gid, name: TEST_USER };
}

export interface Sandbox {
  dir: string;
  root: string;
  state: string;
  outside: string;
  home: string;
  audit: string;
  config: string;
  /** Rewrite the config (merged over the defaults). */
  configure(extra: Record<string, unknown>): void;
  /** Environment for fake-ssh. */
  sshEnv: NodeJS.ProcessEnv;
}

export interface Teardownable {
  teardown(fn: () => void | Promise<void>): void;
}

function chownTree(p: string, uid: number, gid: number): void {
  fs.lchownSync(p, uid, gid);
  if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p)) chownTree(path.join(p, n), uid, gid);
}

/**
 * Make a sandbox; files: relative path -> content, created in the root before the session.
 * fsBytes: root and state on a tmpfs of that size of their own (a full disk), unmounted at the end;
 * the audit log and the rest stay outside it.
 */
export function sandbox(t: Teardownable, opts: { files?: Record<string, string | Buffer>; config?: Record<string, unknown>; fsBytes?: number } = {}): Sandbox {
  const { uid, gid, name } = gateIds();
  const dir = fs.mkdtempSync("/tmp/vb-test-");
  fs.chmodSync(dir, 0o755);
  let top = dir;
  if (opts.fsBytes !== undefined) {
    top = path.join(dir, "fs");
    fs.mkdirSync(top);
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${opts.fsBytes},mode=0755`, "tmpfs", top], { encoding: "utf8" });
    if (m.status !== 0) throw new Error(`mount tmpfs on ${top}: ${m.stderr}`);
  }
  const root = path.join(top, "root");
  const state = path.join(top, "root.state");
  const outside = path.join(dir, "outside");
  const home = path.join(dir, "home");
  fs.mkdirSync(root, { mode: 0o750 });
  fs.mkdirSync(state, { mode: 0o700 });
  fs.mkdirSync(path.join(outside, "sub"), { recursive: true });
  fs.writeFileSync(path.join(outside, "canary.txt"), "outside canary\n");
  fs.writeFileSync(path.join(outside, "sub", "secret"), "secret\n");
  fs.mkdirSync(path.join(home, ".ssh"), { recursive: true });
  fs.writeFileSync(path.join(home, ".ssh", "authorized_keys"), "ssh-ed25519 AAAAC3Nza... original\n");
  fs.writeFileSync(path.join(home, ".bashrc"), "# original\n");
  for (const [rel, content] of Object.entries(opts.files ?? {})) {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
  }
  chownTree(root, uid, gid);
  chownTree(state, uid, gid);
  // The home is the account's, as a careless admin would leave it: tests prove we never touch it.
  chownTree(home, uid, gid);
  const audit = path.join(dir, "audit.log");
  fs.writeFileSync(audit, "");
  fs.chownSync(audit, uid, gid);
  const config = path.join(dir, "config.json");
  const base = { label: "test", root, audit: { file: audit } };
  const configure = (extra: Record<string, unknown>) => fs.writeFileSync(config, JSON.stringify({ ...base, ...opts.config, ...extra }, null, 2));
  configure({});
  const sshEnv: NodeJS.ProcessEnv = { ...process.env, VB_CONFIG: config, ...(name ? { VB_RUN_AS: name } : {}) };
  t.teardown(() => {
    if (top !== dir) spawnSync("umount", ["--lazy", top]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, root, state, outside, home, audit, config, configure, sshEnv };
}

export interface Snap {
  [rel: string]: string;
}

/** Every entry below dir, never following links: type, mode, owner, size and content hash. */
export function snapshot(dir: string): Snap {
  const out: Snap = {};
  const walk = (p: string, rel: string) => {
    const st = fs.lstatSync(p);
    let what = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.nlink}`;
    if (st.isFile()) what += ` ${st.size} ${crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex")} ${st.mtimeMs}`;
    else if (st.isSymbolicLink()) what += ` -> ${fs.readlinkSync(p)}`;
    out[rel || "."] = what;
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(path.join(p, n), rel ? `${rel}/${n}` : n);
  };
  walk(dir, "");
  return out;
}

/** Snapshot of everything a session must never change: the root, its siblings, the fake home. */
export function snapshotAll(sb: Sandbox): Snap {
  const out: Snap = {};
  for (const [k, d] of Object.entries({ root: sb.root, outside: sb.outside, home: sb.home }))
    for (const [rel, v] of Object.entries(snapshot(d))) out[`${k}/${rel}`] = v;
  return out;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Run the real binary as the gate user, with SSH_ORIGINAL_COMMAND (undefined = unset). */
export function runGate(sb: Sandbox, command: string | undefined, opts: RunOptions = {}): Promise<RunResult> {
  const { name } = gateIds();
  const env: NodeJS.ProcessEnv = { PATH: "/usr/bin:/bin", SSH_CLIENT: "127.0.0.1 50000 22" };
  if (command !== undefined) env.SSH_ORIGINAL_COMMAND = command;
  const argv = name ? ["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "--config", sb.config] : [BIN, "--config", sb.config];
  return run(argv, { env }, opts);
}

export interface RunOptions {
  input?: Buffer | string;
  timeoutMs?: number;
  /** Leave stdin open after the input: a client that goes quiet rather than away. */
  keepOpen?: boolean;
}

export function run(argv: string[], spawnOpts: SpawnOptions, opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { ...spawnOpts, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let err = "";
    child.stdout!.on("data", (d: Buffer) => out.push(d));
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdin!.on("error", () => {});
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    if (opts.keepOpen) child.stdin!.write(opts.input ?? "");
    else child.stdin!.end(opts.input ?? "");
  });
}

export interface AuditLine {
  event: string;
  decision?: string;
  reason?: string;
  command?: string | null;
  [k: string]: unknown;
}

export function auditLines(sb: Sandbox): AuditLine[] {
  return fs
    .readFileSync(sb.audit, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine);
}
