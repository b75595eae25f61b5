// validate-backup install-remote: lock a backup account down on REMOTE and give one SOURCE key to
// the gate. Builds the plan, prints each step, applies it (not with --dry-run), then runs check.
import path from "node:path";
import fs from "node:fs";
import { parseArgs } from "node:util";
import { VbError } from "../errors.js";
import { parseConfig } from "../config/load.js";
import { parseSize } from "../config/size.js";
import { buildPlan, sysctlConf, type Layout, type SourceLayout } from "./plan.js";
import { runPlan } from "./apply.js";
import { Ctx } from "./change.js";
import { readPublicKey, gateLine, mergeKeys, checkFrom } from "./keys.js";
import { lookupUser, lookupGroup, isRoot, runtimeFiles, programFiles } from "./system.js";
import { canonical, readText } from "./fsops.js";
import * as sshd from "./sshd.js";
import { runCheck } from "./check.js";
import { scheduleOption } from "./schedule.js";
import { TOP } from "../top.js";

export const PROGRAM = canonical(TOP);
export const LAUNCHER = path.join(PROGRAM, "bin/validate-backup");

const USAGE =
  "usage: validate-backup install-remote --user NAME --root DIR --key PUBKEY_FILE [--from PATTERN]\n" +
  "         [--access append-only|read-only] [--label NAME] [--home DIR] [--sshd-dropin] [--dry-run]\n" +
  "         [--config-dir DIR (/etc/validate-backup)] [--log-dir DIR (/var/log/validate-backup)]\n" +
  "         [--sshd-config FILE (/etc/ssh/sshd_config)] [--keep-full N (the config's, else 4)]\n" +
  "         [--quota SIZE (bytes the key may store, root and state together: 500G, 2T; the config's, else none)]\n" +
  "         [--schedule auto|systemd|cron|none (auto: systemd where it runs, else cron)]\n" +
  "         [--schedule-dir DIR (/etc/systemd/system or /etc/cron.d)]";

const OPTIONS = {
  user: { type: "string" },
  root: { type: "string" },
  key: { type: "string" },
  from: { type: "string" },
  access: { type: "string", default: "append-only" },
  label: { type: "string" },
  home: { type: "string" },
  "sshd-dropin": { type: "boolean", default: false },
  "dry-run": { type: "boolean", default: false },
  "config-dir": { type: "string", default: "/etc/validate-backup" },
  "log-dir": { type: "string", default: "/var/log/validate-backup" },
  "sshd-config": { type: "string", default: sshd.DEFAULT_SSHD_CONFIG },
  "keep-full": { type: "string" },
  quota: { type: "string" },
  schedule: { type: "string", default: "auto" },
  "schedule-dir": { type: "string" },
} as const;

const USER_NAME = /^[a-z_][a-z0-9_-]{0,30}$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

function bad(message: string): never {
  throw new VbError("BAD_REQUEST", message);
}

function absolute(name: string, p: string): string {
  if (!path.isAbsolute(p) || p.includes("\0")) bad(`--${name} must be an absolute path`);
  return canonical(p);
}

function within(parent: string, p: string): boolean {
  return p === parent || p.startsWith(parent + "/");
}

export type Options = ReturnType<typeof parse>;

function parse(args: string[]) {
  let v;
  try {
    v = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    bad(`${(e as Error).message}\n${USAGE}`);
  }
  const { user, key } = v;
  if (!user || !v.root || !key) bad(`--user, --root and --key are required\n${USAGE}`);
  if (!USER_NAME.test(user)) bad(`--user '${user.slice(0, 40)}': a lower-case account name`);
  const label = v.label ?? user;
  if (!LABEL.test(label)) bad(`--label '${label.slice(0, 40)}': letters, digits, '.', '_', '@', '-' (at most 64)`);
  if (v.access !== "append-only" && v.access !== "read-only") bad(`--access must be append-only or read-only`);
  const existing = lookupUser(user);
  const root = absolute("root", v.root);
  const home = v.home ? absolute("home", v.home) : (existing?.home ?? `/home/${user}`);
  if (!path.isAbsolute(home) || home === "/") bad(`the home of ${user} (${home}) cannot be used: give --home`);
  if (root === "/" || within(root, home) || within(path.join(home, ".ssh"), root)) bad(`--root ${root}: the home ${home} must lie outside it, and it outside ~/.ssh`);
  if (within(PROGRAM, root) || within(root, PROGRAM)) bad(`--root ${root} must lie outside the program (${PROGRAM})`);
  const keepFull = v["keep-full"];
  if (keepFull !== undefined && !/^[1-9]\d{0,4}$/.test(keepFull)) bad(`--keep-full needs a whole number of at least 1 (got '${keepFull.slice(0, 16)}')`);
  const quota = v.quota === undefined ? undefined : (parseSize(v.quota) ?? bad(`--quota needs a size such as 500G or 2T (got '${v.quota.slice(0, 16)}')`));
  return {
    user,
    label,
    root,
    home,
    access: v.access,
    keyFile: absolute("key", key),
    from: v.from === undefined ? undefined : checkFrom(v.from),
    dropin: v["sshd-dropin"],
    dry: v["dry-run"],
    configDir: absolute("config-dir", v["config-dir"]),
    logDir: absolute("log-dir", v["log-dir"]),
    sshdConfig: absolute("sshd-config", v["sshd-config"]),
    keepFull: keepFull === undefined ? undefined : Number(keepFull),
    quota,
    schedule: scheduleOption(v.schedule, v["schedule-dir"]),
    createAccount: !existing,
    group: existing ? (lookupGroup(existing.gid)?.name ?? bad(`the primary group ${existing.gid} of ${user} has no name`)) : user,
  };
}

/**
 * The key's policy: the fields install-remote owns are set, any other setting an admin made is kept.
 * --keep-full lands in housekeeping.keepFull, so that check rebuilds the schedule from the config;
 * --quota in limits.maxStoredBytes.
 */
function configContent(o: Options, s: Omit<SourceLayout, "keepFull" | "access" | "quota">): Pick<SourceLayout, "keepFull" | "access" | "quota"> & { text: string } {
  let json: Record<string, unknown> = {};
  const old = readText(s.config);
  if (old !== null) {
    try {
      json = JSON.parse(old) as Record<string, unknown>;
    } catch {
      bad(`${s.config} exists and is not JSON: fix or remove it first`);
    }
  }
  json = { ...json, label: s.label, root: s.root, state: s.state, access: o.access, audit: { ...(json.audit as object), file: s.audit } };
  if (o.keepFull !== undefined) json.housekeeping = { ...(json.housekeeping as object), keepFull: o.keepFull };
  if (o.quota !== undefined) json.limits = { ...(json.limits as object), maxStoredBytes: o.quota };
  const text = JSON.stringify(json, null, 2) + "\n";
  const policy = parseConfig(text, s.config); // the gate must accept what we write
  return { text, keepFull: policy.housekeeping.keepFull, access: policy.access, quota: policy.limits.maxStoredBytes };
}

export function layoutFor(o: Options): Layout {
  const base = {
    label: o.label,
    config: path.join(o.configDir, `${o.label}.json`),
    root: o.root,
    state: `${o.root}.state`,
    audit: path.join(o.logDir, `${o.label}.log`),
    launcher: LAUNCHER,
  };
  const { text, ...fromConfig } = configContent(o, base);
  const src: SourceLayout = { ...base, configContent: text, ...fromConfig };
  const key = readPublicKey(fs.readFileSync(o.keyFile, "utf8"), o.keyFile);
  const akPath = path.join(o.home, ".ssh", "authorized_keys");
  let existing = "";
  try {
    existing = readText(akPath) ?? "";
  } catch {
    /* not a regular file: the plan moves it aside */
  }
  return {
    user: o.user,
    group: o.group,
    home: o.home,
    createAccount: o.createAccount,
    program: PROGRAM,
    programFiles: programFiles(PROGRAM),
    runtime: runtimeFiles(),
    sources: [src],
    authorizedKeys: { path: akPath, content: mergeKeys(existing, gateLine(LAUNCHER, src.config, key, o.from), key).content },
    sysctl: { conf: "/etc/sysctl.d/60-validate-backup.conf", content: sysctlConf() },
    sshd: o.dropin ? { config: o.sshdConfig, dropin: sshd.dropinPath(o.sshdConfig, o.user), content: sshd.dropinContent(o.user) } : undefined,
    schedule: o.schedule,
  };
}

export async function installMain(args: string[]): Promise<number> {
  const out = (line: string) => process.stdout.write(line + "\n");
  let o: Options;
  try {
    o = parse(args);
    if (!o.dry && !isRoot()) bad("install-remote must run as root (or with --dry-run, which changes nothing)");
  } catch (e) {
    process.stderr.write(`validate-backup install-remote: ${(e as Error).message}\n`);
    return 2;
  }
  const layout = layoutFor(o);
  out(`${o.dry ? "Plan (dry run: nothing is changed)" : "Installing"} for account ${o.user}, key '${o.label}' -> ${o.root}`);
  const ctx = new Ctx(o.user, o.group, sshd.effective(o.sshdConfig, o.user));
  const { changes, warnings } = runPlan(buildPlan(layout), ctx, { dry: o.dry, out });
  out(`${changes} change(s)${o.dry ? " planned" : " made"}, ${warnings} warning(s)`);
  if (o.dry) return 0;
  out("");
  return runCheck(o.user, o.sshdConfig, out, o.schedule);
}
