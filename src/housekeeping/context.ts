// What seal and prune share: root only, the config, the audit log, and the root and state
// directories opened once, by descriptor, for the walk.
import fs from "node:fs";
import crypto from "node:crypto";
import { VbError } from "../errors.js";
import { toVbError } from "../handler.js";
import { loadConfig, checkPlaces } from "../config/load.js";
import type { Policy } from "../config/schema.js";
import { openAudit, ROOT_CLIENT, type Audit } from "../audit/log.js";
import { at, closeQuietly } from "../fsat.js";
import { openTop, openSubdir, type WalkOptions, type BeforeOpen } from "./walk.js";
import { say, visible } from "../audit/sanitize.js";
import { usageFault, UsageFault, type Subcommand } from "../usage.js";

export const EXIT = { ok: 0, usage: 2, failed: 4, warning: 5 } as const;

export interface Housekeeping {
  policy: Policy;
  audit: Audit;
  rootFd: number;
  rootSt: fs.Stats;
  stateFd: number;
  locksFd: number;
  walk: WalkOptions;
  close(): void;
}

export type OptionKind = "flag" | "value";

/** Parse argv against a table of options; anything else is refused. Repeats are refused too. */
/** `sub`: whose usage follows the reason when the command line is wrong. */
export function parseArgs(args: string[], table: Record<string, OptionKind>, sub: Subcommand): Map<string, string> {
  try {
    return readOptions(args, table);
  } catch (e) {
    throw e instanceof VbError ? usageFault(sub, e.message) : e;
  }
}

function readOptions(args: string[], table: Record<string, OptionKind>): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const [name, inline] = args[i]!.startsWith("--") && args[i]!.includes("=") ? args[i]!.split(/=(.*)/s, 2) : [args[i]!, undefined];
    const kind = Object.hasOwn(table, name!) ? table[name!] : undefined;
    if (!kind) throw new VbError("BAD_REQUEST", `unknown option '${String(name).slice(0, 64)}' (options: ${Object.keys(table).join(", ")})`);
    if (out.has(name!)) throw new VbError("BAD_REQUEST", `option '${name}' given twice`);
    if (kind === "flag") {
      if (inline !== undefined) throw new VbError("BAD_REQUEST", `option '${name}' takes no value`);
      out.set(name!, "");
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) throw new VbError("BAD_REQUEST", `option '${name}' needs a value`);
    out.set(name!, value);
  }
  return out;
}

/** `90d`, `12h`, `1w2d`, `30m`, `45s` -> milliseconds. */
export function parseDuration(s: string): number {
  const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
  if (!/^(\d{1,6}[smhdw])+$/.test(s)) throw new VbError("BAD_REQUEST", `'${s.slice(0, 32)}' is not a duration such as 90d, 12h, 2w or 1w3d`);
  let ms = 0;
  for (const [, n, u] of s.matchAll(/(\d+)([smhdw])/g)) ms += Number(n) * UNITS[u!]!;
  return ms;
}

/**
 * `--now T` (not in the usage): the clock prune, hourly, notify, metrics and status judge by, so
 * that tests show the rules past the retention floor without sleeping for it. An option, not an
 * environment variable: the launcher clears the environment (env -i), so a variable could not reach
 * them through the real binary. Only root runs them, from root's schedule or shell; the key's forced
 * command serves the protocols and never reaches a subcommand's argv. Root could remove files without us anyway; the
 * prune audit line names the clock it was given.
 */
export function nowFrom(o: Map<string, string>): number | undefined {
  const s = o.get("--now");
  if (s === undefined) return undefined;
  const t = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?Z$/.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(t)) throw new VbError("BAD_REQUEST", `--now needs a UTC time such as 2026-01-31T12:00:00Z (got '${s.slice(0, 32)}')`);
  return t;
}

export function requireRoot(what: string, why = "it changes owners and removes files the backup user cannot"): void {
  if (process.getuid?.() !== 0) throw new VbError("NOT_ALLOWED", `${what} must run as root (${why})`);
}

/** What root's housekeeping never does for a read-only (pull) key, and why. */
const NOT_FOR_PULL_KEYS: Record<string, string> = {
  seal: "its tree is SOURCE's own outgoing data, which sealing would make root's",
  prune: "its tree is SOURCE's own outgoing data, which only SOURCE removes",
  "verify-stored": "it publishes nothing through the gate, so its audit log records no hash to compare with",
};

export function open(configPath: string, command: string, beforeOpen?: BeforeOpen): Housekeeping {
  const policy = loadConfig(configPath);
  const why = policy.access === "read-only" && Object.hasOwn(NOT_FOR_PULL_KEYS, command) ? NOT_FOR_PULL_KEYS[command] : undefined;
  if (why) throw new VbError("BAD_REQUEST", `config ${configPath}: a read-only key gets no ${command}: ${why}`);
  const { rootReal } = checkPlaces(policy);
  const fds: number[] = [];
  const close = () => fds.forEach(closeQuietly);
  try {
    const root = openTop(rootReal);
    fds.push(root.fd);
    const state = openTop(policy.state);
    fds.push(state.fd);
    if (state.st.dev !== root.st.dev) throw new VbError("IO", `state directory ${policy.state} is not on the root's filesystem`);
    // The state directory belongs to the backup user: even our lock files are made through the
    // descriptor, so a 'locks' swapped for a link cannot send root's writes elsewhere.
    const walk: WalkOptions = { dev: root.st.dev, beforeOpen };
    let made = false;
    try {
      fs.mkdirSync(at(state.fd, "locks"), 0o700);
      made = true;
    } catch {
      /* exists */
    }
    const locks = openSubdir(state.fd, [], "locks", { dev: root.st.dev });
    if ("why" in locks) throw new VbError("IO", `${policy.state}/locks: ${locks.why}`);
    fds.push(locks.fd);
    if (made) fs.fchownSync(locks.fd, state.st.uid, state.st.gid); // the sessions' own area
    const sid = `${command}-${process.pid}-${crypto.randomBytes(3).toString("hex")}`;
    const audit = openAudit(policy.audit.file, at(locks.fd, "audit.lock"), { label: policy.label, sid, client: ROOT_CLIENT });
    if (!audit.ok) throw new VbError("IO", `the audit log ${policy.audit.file} cannot be written`);
    return { policy, audit, rootFd: root.fd, rootSt: root.st, stateFd: state.fd, locksFd: locks.fd, walk, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** Run a housekeeping command: errors become a message and an exit status, never a stack trace. */
export async function main(command: string, fn: () => Promise<number> | number): Promise<number> {
  try {
    return await fn();
  } catch (e) {
    const err = toVbError(e);
    say(`validate-backup ${command}: ${visible(err.message)}${err instanceof UsageFault ? `\n${err.usage}` : ""}`, "err");
    return err.code === "BAD_REQUEST" ? EXIT.usage : EXIT.failed;
  }
}

/** The group that may read sealed files: configured, else the root directory's. */
export function sealGroup(h: Housekeeping): number {
  const g = h.policy.housekeeping.group;
  if (g === undefined) return h.rootSt.gid;
  if (typeof g === "number") return g;
  const line = fs
    .readFileSync("/etc/group", "utf8")
    .split("\n")
    .find((l) => l.split(":")[0] === g);
  const gid = Number(line?.split(":")[2]);
  if (!line || !Number.isInteger(gid)) throw new VbError("BAD_REQUEST", `config ${h.policy.configPath}: key 'housekeeping.group': no group '${g}' in /etc/group`);
  return gid;
}
