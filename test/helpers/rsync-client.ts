// The real rsync client against the gate, through fake-ssh (the gate runs as the test user), and
// the local trees it pushes from and pulls into.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { FAKE_SSH, run, auditLines, type Sandbox, type Teardownable, type RunResult } from "./env.js";

export const RSYNC = "/usr/bin/rsync";

/** `rsync -e fake-ssh ARGS`, remote paths written as `h:PATH`. */
export function rsyncClient(sb: Sandbox, args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return run([RSYNC, "-e", FAKE_SSH, ...args], { env: sb.sshEnv }, { timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** The same, started in the background (for killing it midway). */
export function rsyncClientSpawn(sb: Sandbox, args: string[]): ChildProcess {
  return spawn(RSYNC, ["-e", FAKE_SSH, ...args], { env: sb.sshEnv, stdio: ["ignore", "pipe", "pipe"] });
}

/** A local directory with these files (relative path -> content), removed at the end. */
export function localTree(t: Teardownable, files: Record<string, string | Buffer> = {}): string {
  const dir = fs.mkdtempSync("/tmp/vb-rsync-local-");
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
  }
  t.teardown(() => removeAll(dir));
  return dir;
}

function removeAll(dir: string): void {
  // Trees under test may hold directories without write permission (rsync -p).
  const open = (p: string) => {
    const st = fs.lstatSync(p);
    if (!st.isDirectory()) return;
    fs.chmodSync(p, 0o700);
    for (const n of fs.readdirSync(p)) open(path.join(p, n));
  };
  try {
    open(dir);
  } catch {
    /* gone */
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Regular files below dir: relative path -> sha256 (links and other types are named as such). */
export function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string, rel: string) => {
    for (const n of fs.readdirSync(p).sort()) {
      const full = path.join(p, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(full);
      if (st.isDirectory()) walk(full, r);
      else if (st.isFile()) out[r] = crypto.createHash("sha256").update(fs.readFileSync(full)).digest("hex");
      else out[r] = st.isSymbolicLink() ? "symlink" : "special";
    }
  };
  walk(dir, "");
  return out;
}

/** What is left in the state's per-session areas (must be nothing after a session). */
export function leftovers(sb: Sandbox): string[] {
  const out: string[] = [];
  for (const area of ["tmp", "staging"]) {
    const dir = path.join(sb.state, area);
    if (fs.existsSync(dir)) for (const n of fs.readdirSync(dir)) out.push(`${area}/${n}`);
  }
  return out;
}

/** Audit lines of the last session in the log. */
export function lastSession(sb: Sandbox) {
  const lines = auditLines(sb);
  const sid = lines.at(-1)?.sid;
  return lines.filter((l) => l.sid === sid);
}

export async function until(what: string, test: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
