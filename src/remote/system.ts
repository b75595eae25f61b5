// The system tools root's commands call, and the account database. Every tool by absolute path,
// argv array, an environment built here: install and check run as root, so nothing of the caller's
// PATH, LD_* or locale may choose what runs.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { VbError } from "../errors.js";

export const TOOLS = {
  useradd: "/usr/sbin/useradd",
  usermod: "/usr/sbin/usermod",
  getent: "/usr/bin/getent",
  id: "/usr/bin/id",
  chattr: "/usr/bin/chattr",
  lsattr: "/usr/bin/lsattr",
  sshd: "/usr/sbin/sshd",
} as const;
export type Tool = keyof typeof TOOLS;

const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C", LC_ALL: "C" };

export interface ToolResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function tool(name: Tool, args: string[], input?: string): ToolResult {
  const r = spawnSync(TOOLS[name], args, { env: ENV, encoding: "utf8", input, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 });
  if (r.error) return { status: null, stdout: "", stderr: `${TOOLS[name]}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}` };
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Run a tool that must succeed. */
export function mustTool(name: Tool, args: string[]): string {
  const r = tool(name, args);
  if (r.status !== 0) throw new VbError("IO", `${TOOLS[name]} ${args.join(" ")} failed: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout;
}

/** How a command looks when printed for a person to copy (single-quoted where needed). */
export function shown(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_./@:=+,-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

function getent(db: string, key?: string): string[][] {
  const r = tool("getent", key === undefined ? [db] : [db, key]);
  if (r.status === 2) return []; // not found
  if (r.status !== 0) throw new VbError("IO", `getent ${db}: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(":"));
}

function toAccount(f: string[]): Account {
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? "", shell: f[6] ?? "" };
}

export function lookupUser(name: string): Account | null {
  const rows = getent("passwd", name);
  return rows[0] ? toAccount(rows[0]) : null;
}

export function allUsers(): Account[] {
  return getent("passwd").map(toAccount);
}

export interface Group {
  name: string;
  gid: number;
  members: string[];
}

export function lookupGroup(nameOrGid: string | number): Group | null {
  const f = getent("group", String(nameOrGid))[0];
  if (!f) return null;
  return { name: f[0]!, gid: Number(f[2]), members: (f[3] ?? "").split(",").filter(Boolean) };
}

/** The account's groups, primary first, as the kernel will see them after login. */
export function groupsOf(name: string): number[] {
  return mustTool("id", ["-G", name])
    .trim()
    .split(/\s+/)
    .map(Number);
}

/** The password field of /etc/shadow (null when the account has no shadow entry). */
export function shadowField(name: string): string | null {
  const f = getent("shadow", name)[0];
  return f ? (f[1] ?? "") : null;
}

/** A field made only of '!' and '*' holds no hash: no password can ever match it. */
export function noPassword(field: string | null): boolean {
  return field !== null && /^[!*]+$/.test(field);
}

export function readSysctl(name: string): string | null {
  try {
    return fs.readFileSync(`/proc/sys/${name.replace(/\./g, "/")}`, "utf8").trim();
  } catch {
    return null;
  }
}

export function writeSysctl(name: string, value: string): void {
  fs.writeFileSync(`/proc/sys/${name.replace(/\./g, "/")}`, value);
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** What bin/validate-backup runs before our code: its interpreter, env and node (the first it finds). */
export function runtimeFiles(extra: string[] = []): string[] {
  const node = ["/usr/bin/node", "/usr/local/bin/node"].find((p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  const out = new Set<string>();
  for (const p of ["/bin/sh", "/usr/bin/env", ...(node ? [node] : []), ...extra]) {
    try {
      out.add(fs.realpathSync(p));
    } catch {
      /* absent: the launcher says so itself */
    }
  }
  return [...out];
}
