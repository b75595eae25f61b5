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
  chattr: "/usr/bin/chattr",
  lsattr: "/usr/bin/lsattr",
  sshd: "/usr/sbin/sshd",
  systemctl: "/usr/bin/systemctl",
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

// The local files first: backup accounts are local system accounts, and a spawn per lookup is slow
// on a busy machine. getent (NSS) only for what the files do not hold.
function dbRows(db: "passwd" | "group" | "shadow"): string[][] {
  try {
    return fs
      .readFileSync(`/etc/${db}`, "utf8")
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split(":"));
  } catch {
    return [];
  }
}

function getent(db: string, key: string): string[] | undefined {
  const r = tool("getent", [db, key]);
  if (r.status === 2) return undefined; // not found
  if (r.status !== 0) throw new VbError("IO", `getent ${db}: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout.split("\n")[0]?.split(":");
}

function find(db: "passwd" | "group" | "shadow", key: string): string[] | undefined {
  const col = /^\d+$/.test(key) && db !== "shadow" ? 2 : 0;
  return dbRows(db).find((f) => f[col] === key) ?? getent(db, key);
}

function toAccount(f: string[]): Account {
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? "", shell: f[6] ?? "" };
}

export function lookupUser(name: string): Account | null {
  const f = find("passwd", name);
  return f ? toAccount(f) : null;
}

export function allUsers(): Account[] {
  return dbRows("passwd").map(toAccount);
}

export interface Group {
  name: string;
  gid: number;
  members: string[];
}

function toGroup(f: string[]): Group {
  return { name: f[0]!, gid: Number(f[2]), members: (f[3] ?? "").split(",").filter(Boolean) };
}

export function lookupGroup(nameOrGid: string | number): Group | null {
  const f = find("group", String(nameOrGid));
  return f ? toGroup(f) : null;
}

/** The account's groups, primary first, as the kernel will see them after login. */
export function groupsOf(name: string): number[] {
  const acct = lookupUser(name);
  if (!acct) return [];
  const extra = dbRows("group")
    .map(toGroup)
    .filter((g) => g.members.includes(name) && g.gid !== acct.gid)
    .map((g) => g.gid);
  return [acct.gid, ...extra];
}

/** The password field of /etc/shadow (null when the account has no shadow entry). */
export function shadowField(name: string): string | null {
  const f = find("shadow", name);
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

/**
 * What node loads from the program's directory, relative to it: the launcher, our code, package.json
 * and the production packages of package-lock.json (npm ci --omit=dev installs no more). A name ending
 * in '/' is a directory checked by itself, not walked. Without a lock file, all of node_modules.
 */
export function programFiles(top: string): string[] {
  const base = ["bin", "dist", "package.json", "package-lock.json"];
  let lock: { packages?: Record<string, { dev?: boolean }> };
  try {
    lock = JSON.parse(fs.readFileSync(`${top}/package-lock.json`, "utf8")) as typeof lock;
  } catch {
    return [...base, "node_modules"];
  }
  const pkgs = Object.entries(lock.packages ?? {})
    .filter(([k, v]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(k) && !v.dev)
    .map(([k]) => k);
  const scopes = [...new Set(pkgs.filter((k) => k.includes("@")).map((k) => k.split("/").slice(0, 2).join("/") + "/"))];
  return [...base, "node_modules/", ...scopes, ...pkgs];
}
