// Fixtures for the duplicity profile and the housekeeping commands: names of backup sets as
// duplicity 0.8 writes them, files planted in a sandbox's root as root (simulating anything that
// bypassed the gatekeeper) with or without an arrival record, and root-side runs of seal and prune.
import type { Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { BIN, FAKE_SSH, run, gateIds, type Sandbox, type RunResult } from "./env.js";
import { recordArrival } from "../../src/vault/arrivals.js";

export const ts = (d: Date | number) => new Date(d).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");

export interface SetOptions {
  vols?: number;
  sfx?: "" | ".gz" | ".gpg";
  manifest?: boolean;
}

export function fullSet(t: string, o: SetOptions = {}): string[] {
  const { vols = 2, sfx = ".gpg", manifest = true } = o;
  return [
    ...Array.from({ length: vols }, (_, i) => `duplicity-full.${t}.vol${i + 1}.difftar${sfx}`),
    `duplicity-full-signatures.${t}.sigtar${sfx}`,
    ...(manifest ? [`duplicity-full.${t}.manifest${sfx === ".gpg" ? ".gpg" : ""}`] : []),
  ];
}

export function incSet(a: string, b: string, o: SetOptions = {}): string[] {
  const { vols = 1, sfx = ".gpg", manifest = true } = o;
  return [
    ...Array.from({ length: vols }, (_, i) => `duplicity-inc.${a}.to.${b}.vol${i + 1}.difftar${sfx}`),
    `duplicity-new-signatures.${a}.to.${b}.sigtar${sfx}`,
    ...(manifest ? [`duplicity-inc.${a}.to.${b}.manifest${sfx === ".gpg" ? ".gpg" : ""}`] : []),
  ];
}

/** A chain of one full set and `incs` incrementals, a day apart from `start`. */
export function chain(start: number, incs: number, o: SetOptions = {}): string[] {
  const day = 86_400_000;
  const out = fullSet(ts(start), o);
  for (let i = 0; i < incs; i++) out.push(...incSet(ts(start + i * day), ts(start + (i + 1) * day), { ...o, vols: 1 }));
  return out;
}

/**
 * Plant files in the root as the gatekeeper would have left them (owned by the gate user), with an
 * arrival record at `arrived` (ms) unless it is undefined: root planting behind the vault's back.
 */
export function plant(sb: Sandbox, dir: string, names: string[], arrived?: number, content = (n: string) => `bytes of ${n}\n`): void {
  const { uid, gid } = gateIds();
  const d = path.join(sb.root, dir);
  fs.mkdirSync(d, { recursive: true });
  fs.chownSync(d, uid, gid);
  fs.mkdirSync(path.join(sb.state, "locks"), { recursive: true });
  for (const n of names) {
    const p = path.join(d, n);
    fs.writeFileSync(p, content(n), { mode: 0o640 });
    fs.chownSync(p, uid, gid);
    if (arrived !== undefined) recordArrival(sb.state, path.posix.join(dir, n).replace(/^\.\//, ""), fs.statSync(p), arrived);
  }
  for (const f of fs.readdirSync(sb.state)) fs.chownSync(path.join(sb.state, f), uid, gid);
}

/** Run a root-side subcommand of the real binary. */
export function runRoot(sb: Sandbox, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return run([BIN, args[0]!, "--config", sb.config, ...args.slice(1)], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs });
}

export function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Upload files, in order, into `dir` of the sandbox's root through the real gate with OpenSSH sftp
 * (what SOURCE's key can do). A name in `mayFail` may be refused without failing the batch.
 */
export async function uploadSftp(t: Test, sb: Sandbox, dir: string, files: [string, Buffer][], mayFail: string[] = []): Promise<RunResult> {
  const local = fs.mkdtempSync("/tmp/vb-upload-");
  t.teardown(() => fs.rmSync(local, { recursive: true, force: true }));
  const batch = [`-mkdir ${dir}`];
  files.forEach(([name, bytes], i) => {
    fs.writeFileSync(path.join(local, String(i)), bytes);
    batch.push(`${mayFail.includes(name) ? "-" : ""}put ${i} ${dir}/${name}`);
  });
  fs.writeFileSync(path.join(local, "batch"), batch.join("\n") + "\n");
  const r = await run(["sftp", "-S", FAKE_SSH, "-b", "batch", "x:"], { env: sb.sshEnv, cwd: local }, { timeoutMs: 120_000 });
  t.equal(r.code, 0, `sftp upload into ${dir}: ${r.stderr}`);
  return r;
}

/**
 * One finished full set dated 2025-01-01, planted in `dir` as arrived a day ago: the neighbour
 * against which a new name is judged. `at(n)` is the name time n days after it (negative: before);
 * `future` a time two days ahead of this machine's clock.
 */
export function finishedFull(sb: Sandbox, dir = "h"): { at: (days: number) => string; future: string } {
  const day = 86_400_000;
  const start = Date.UTC(2025, 0, 1);
  plant(sb, dir, fullSet(ts(start)), Date.now() - day);
  return { at: (n) => ts(start + n * day), future: ts(Date.now() + 2 * day) };
}
