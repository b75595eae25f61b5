// validate-backup install-remote: lock a backup account down on REMOTE and give one SOURCE key to
// the gate. Builds the plan, prints each step, applies it (not with --dry-run), then runs check.
import path from "node:path";
import fs from "node:fs";
import { parseArgs } from "node:util";
import { VbError } from "../errors.js";
import { parseConfig, parseConfigJson } from "../config/load.js";
import { parseSize } from "../config/size.js";
import { buildPlan, sysctlConf, type Layout, type SourceLayout } from "./plan.js";
import { runPlan } from "./apply.js";
import { Ctx } from "./change.js";
import { readPublicKey, gateLine, mergeKeys, checkFrom, parseKeyLine, gateOf } from "./keys.js";
import { lookupUser, lookupGroup, isRoot, runtimeFiles, programFiles } from "./system.js";
import { canonical, readText } from "./fsops.js";
import * as sshd from "./sshd.js";
import { runCheck } from "./check.js";
import { refuseSplitPlaces, rebinding, keyLineFindings } from "./preflight.js";
import { runnerFindings } from "./runner.js";
import type { Change } from "./change.js";
import { scheduleOption } from "./schedule.js";
import { TOP } from "../top.js";
import { usageText } from "../usage.js";
import { absolute, checkLabel, CONFIG_DIR } from "./options.js";
import { sourceExample } from "./source-example.js";

export const PROGRAM = canonical(TOP);
export const LAUNCHER = path.join(PROGRAM, "bin/validate-backup");

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
  rebind: { type: "boolean", default: false },
  "config-dir": { type: "string", default: CONFIG_DIR },
  "log-dir": { type: "string", default: "/var/log/validate-backup" },
  "sshd-config": { type: "string", default: sshd.DEFAULT_SSHD_CONFIG },
  "keep-full": { type: "string" },
  "retention-days": { type: "string" },
  quota: { type: "string" },
  schedule: { type: "string", default: "auto" },
  "schedule-dir": { type: "string" },
} as const;

const USER_NAME = /^[a-z_][a-z0-9_-]{0,30}$/;

function bad(message: string): never {
  throw new VbError("BAD_REQUEST", message);
}

/** --key's file, with the option and the file named when it cannot be read. */
function readKeyFile(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    return bad(`--key ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
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
    bad(`${(e as Error).message}\n${usageText("install-remote")}`);
  }
  const { user, key } = v;
  if (!user || !v.root || !key) bad(`--user, --root and --key are required\n${usageText("install-remote")}`);
  if (!USER_NAME.test(user)) bad(`--user '${user.slice(0, 40)}': a lower-case account name`);
  const label = v.label ?? user;
  checkLabel(label);
  if (v.access !== "append-only" && v.access !== "read-only") bad(`--access must be append-only or read-only`);
  const existing = lookupUser(user);
  const root = absolute("root", v.root);
  const home = v.home ? absolute("home", v.home) : (existing?.home ?? `/home/${user}`);
  if (!path.isAbsolute(home) || home === "/") bad(`the home of ${user} (${home}) cannot be used: give --home`);
  if (root === "/" || within(root, home) || within(path.join(home, ".ssh"), root)) bad(`--root ${root}: the home ${home} must lie outside it, and it outside ~/.ssh`);
  if (within(PROGRAM, root) || within(root, PROGRAM)) bad(`--root ${root} must lie outside the program (${PROGRAM})`);
  const keepFull = v["keep-full"];
  if (keepFull !== undefined && !/^[1-9]\d{0,4}$/.test(keepFull)) bad(`--keep-full needs a whole number of at least 1 (got '${keepFull.slice(0, 16)}')`);
  const retentionDays = v["retention-days"];
  if (retentionDays !== undefined && !(/^[1-9]\d{0,4}$/.test(retentionDays) && Number(retentionDays) <= 36500))
    bad(`--retention-days needs a whole number of days from 1 to 36500 (got '${retentionDays.slice(0, 16)}')`);
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
    rebind: v.rebind,
    configDir: absolute("config-dir", v["config-dir"]),
    logDir: absolute("log-dir", v["log-dir"]),
    sshdConfig: absolute("sshd-config", v["sshd-config"]),
    keepFull: keepFull === undefined ? undefined : Number(keepFull),
    retentionDays: retentionDays === undefined ? undefined : Number(retentionDays),
    quota,
    schedule: scheduleOption(v.schedule, v["schedule-dir"]),
    createAccount: !existing,
    group: existing ? (lookupGroup(existing.gid)?.name ?? bad(`the primary group ${existing.gid} of ${user} has no name`)) : user,
  };
}

/**
 * The key's policy: the fields install-remote owns are set, any other setting an admin made is kept.
 * --keep-full lands in housekeeping.keepFull, so that check rebuilds the schedule from the config;
 * --retention-days in housekeeping.retentionDays, which prune reads from the config (no option lowers it).
 * --quota in limits.maxStoredBytes.
 */
function configContent(o: Options, s: Omit<SourceLayout, "keepFull" | "access" | "quota">): Pick<SourceLayout, "keepFull" | "access" | "quota"> & { text: string } {
  let json: Record<string, unknown> = {};
  const old = readText(s.config);
  // The gate's own reading of a config: line and column where it stops being JSON.
  if (old !== null) json = parseConfigJson(old, s.config) as Record<string, unknown>;
  json = { ...json, label: s.label, root: s.root, state: s.state, access: o.access, audit: { ...(json.audit as object), file: s.audit } };
  if (o.keepFull !== undefined) json.housekeeping = { ...(json.housekeeping as object), keepFull: o.keepFull };
  if (o.retentionDays !== undefined) json.housekeeping = { ...(json.housekeeping as object), retentionDays: o.retentionDays };
  if (o.quota !== undefined) json.limits = { ...(json.limits as object), maxStoredBytes: o.quota };
  const text = JSON.stringify(json, null, 2) + "\n";
  const policy = parseConfig(text, s.config); // the gate must accept what we write
  return { text, keepFull: policy.housekeeping.keepFull, access: policy.access, quota: policy.limits.maxStoredBytes };
}

/**
 * The other keys' configs: every *.json in the config directory and every config a gate line of the
 * account names, except this key's own. Each as [config path, its text, or the reason it is unreadable].
 */
function otherConfigs(o: Options, own: string): Map<string, string | Error> {
  const paths = new Set<string>();
  let names: string[] = [];
  try {
    names = fs.readdirSync(o.configDir);
  } catch {
    /* no config directory yet: no other key there */
  }
  for (const n of names) if (n.endsWith(".json")) paths.add(path.join(o.configDir, n));
  for (const raw of (readText(path.join(o.home, ".ssh", "authorized_keys")) ?? "").split("\n")) {
    const k = parseKeyLine(raw);
    const gate = k && !("bad" in k) ? gateOf(k) : null;
    if (gate) paths.add(gate.config);
  }
  paths.delete(own);
  const out = new Map<string, string | Error>();
  for (const p of paths) {
    try {
      const text = readText(p);
      if (text !== null) out.set(p, text);
    } catch (e) {
      out.set(p, e as Error);
    }
  }
  return out;
}

/**
 * Roots do not nest. A root or state inside (or around) another key's would let the plan take
 * group-write off the outer root, or put the inner key's state where the outer key can write: one
 * key could then reach the other's backups. Paths compare canonical, by whole components. An
 * unreadable config of another key refuses too: we cannot tell where its root is.
 */
function refuseNesting(o: Options, own: string, root: string, state: string): void {
  const mine: [string, string][] = [
    ["--root", root],
    ["its state", state],
  ];
  for (const [file, text] of otherConfigs(o, own)) {
    if (text instanceof Error) bad(`cannot tell whether --root ${root} overlaps the key configured in ${file} (${text.message}): fix or remove that config first`);
    let other;
    try {
      other = parseConfig(text, file);
    } catch (e) {
      bad(`cannot tell whether --root ${root} overlaps the key configured in ${file} (${(e as Error).message}): fix or remove that config first`);
    }
    const theirs: [string, string][] = [
      ["root", canonical(other.root)],
      ["state", canonical(other.state)],
    ];
    for (const [what, p] of mine)
      for (const [whose, q] of theirs) {
        const how = p === q ? "is" : within(q, p) ? "lies inside" : within(p, q) ? "contains" : undefined;
        if (how)
          bad(
            `${what} ${p} ${how} the ${whose} ${q} of the key '${other.label}' (${file}): roots and states of two keys must not nest, ` +
              "or one key could write where the other's backups or state are. Choose a separate directory for each key.",
          );
      }
  }
}

/** What the plan cannot say: --rebind's moves, and the other key lines' faults (check will report them). */
interface Preflight {
  notes: string[];
  findings: Change[];
}

export function layoutFor(o: Options): Layout & Preflight {
  const base = {
    label: o.label,
    config: path.join(o.configDir, `${o.label}.json`),
    root: o.root,
    state: `${o.root}.state`,
    audit: path.join(o.logDir, `${o.label}.log`),
    launcher: LAUNCHER,
  };
  refuseNesting(o, base.config, base.root, base.state);
  refuseSplitPlaces(o.label, base.root, base.state);
  const { text, ...fromConfig } = configContent(o, base);
  const src: SourceLayout = { ...base, configContent: text, ...fromConfig };
  const key = readPublicKey(readKeyFile(o.keyFile), o.keyFile);
  const akPath = path.join(o.home, ".ssh", "authorized_keys");
  let existing = "";
  try {
    existing = readText(akPath) ?? "";
  } catch {
    /* not a regular file: the plan moves it aside */
  }
  const notes = rebinding(o, base.config, existing, key);
  const findings = [...keyLineFindings(akPath, existing, key), ...runnerFindings(o.schedule, [o.label])];
  return {
    notes,
    findings,
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
  let layout: Layout & Preflight;
  try {
    o = parse(args);
    if (!o.dry && !isRoot()) bad("install-remote must run as root (or with --dry-run, which changes nothing)");
    layout = layoutFor(o);
  } catch (e) {
    process.stderr.write(`validate-backup install-remote: ${(e as Error).message}\n`);
    return e instanceof VbError && e.code === "BAD_REQUEST" ? 2 : 4;
  }
  out(`${o.dry ? "Plan (dry run: nothing is changed)" : "Installing"} for account ${o.user}, key '${o.label}' -> ${o.root}`);
  for (const n of layout.notes) out(n);
  // Said before the plan, at --dry-run too: install-remote keeps these as they are, and its closing check fails on them.
  for (const c of layout.findings) out(`${c.warn ? "warning" : "DEVIATION"}: ${c.what}\n    fix: ${c.fix}`);
  const ctx = new Ctx(o.user, o.group, sshd.effective(o.sshdConfig, o.user));
  const { changes, warnings } = runPlan(buildPlan(layout), ctx, { dry: o.dry, out });
  out(`${changes} change(s)${o.dry ? " planned" : " made"}, ${warnings} warning(s)`);
  let code = 0;
  if (!o.dry) {
    out("");
    code = runCheck(o.user, o.sshdConfig, out, o.schedule);
  }
  out("");
  for (const line of sourceExample({ user: o.user, root: o.root, keyFile: o.keyFile, access: layout.sources[0]!.access })) out(line);
  return code;
}
