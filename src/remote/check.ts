// validate-backup check --user NAME: rebuild the install plan from what is installed (the account,
// the gate lines of its authorized_keys and their configs), report every difference, then judge what
// the plan cannot express: the other key lines, sshd's effective settings. Exits 1 on any deviation.
// The housekeeping schedule has no pointer in what is installed: check looks where --schedule and
// --schedule-dir say, with install-remote's defaults.
import path from "node:path";
import { parseArgs } from "node:util";
import { VbError } from "../errors.js";
import { loadConfig } from "../config/load.js";
import { buildPlan, sysctlConf, type Layout, type SourceLayout } from "./plan.js";
import { inspect } from "./apply.js";
import { Ctx, type Change } from "./change.js";
import { parseKeyLine, gateOf } from "./keys.js";
import { keyLineFindings, placeFindings } from "./preflight.js";
import { runnerFindings } from "./runner.js";
import { lookupUser, lookupGroup, runtimeFiles, programFiles, TOOLS } from "./system.js";
const TOOLS_SSHD = TOOLS.sshd;
import { canonical, lstatPath, readText } from "./fsops.js";
import * as sshd from "./sshd.js";
import { TOP } from "../top.js";
import { showSize } from "../config/size.js";
import { scheduleOption } from "./schedule.js";
import { usageText } from "../usage.js";
import { rsyncPullFindings } from "./rsync-pull-check.js";
import { say } from "../audit/sanitize.js";

type Out = (line: string) => void;

// sshd settings that matter for a forced-command account: [key, wanted, deviation (true) or warning].
const SSHD_RULES: [string, string, boolean, string][] = [
  ["strictmodes", "yes", true, "sshd would accept keys from files others can write"],
  ["permituserenvironment", "no", true, "environment= options and ~/.ssh/environment could set LD_PRELOAD and friends"],
  ["passwordauthentication", "no", false, "no password exists, but publickey only is clearer (--sshd-dropin)"],
  ["kbdinteractiveauthentication", "no", false, "no password exists, but publickey only is clearer (--sshd-dropin)"],
  ["permittty", "no", false, "'restrict' refuses a terminal per key; --sshd-dropin refuses it for the account"],
  ["permituserrc", "no", false, "'restrict' skips ~/.ssh/rc per key; --sshd-dropin does for the account"],
  ["authorizedkeyscommand", "none", false, "keys may also come from a command, outside what check can see"],
];
const FORWARDING = ["allowtcpforwarding", "allowagentforwarding", "allowstreamlocalforwarding", "x11forwarding", "permittunnel"];
const HARMLESS_ENV = /^(LANG|LANGUAGE|LC_[A-Z*]*|TZ|COLORTERM|NO_COLOR)$/;

function sshdFindings(settings: Map<string, string>, user: string, home: string, akPath: string, dropinExists: boolean): Change[] {
  const out: Change[] = [];
  const fix = (k: string, v: string) => (dropinExists ? `${k} ${v} in sshd_config (and check the drop-in is Included)` : `validate-backup install-remote … --sshd-dropin, or ${k} ${v} in sshd_config`);
  for (const [k, want, hard, why] of SSHD_RULES) {
    const have = settings.get(k);
    if (have !== undefined && have.toLowerCase() !== want) out.push({ what: `sshd: ${k} is ${have} for ${user}: ${why}`, fix: fix(k, want), warn: !hard });
  }
  const fwd = settings.get("disableforwarding") === "yes" || FORWARDING.every((k) => ["no", undefined].includes(settings.get(k)));
  if (!fwd) out.push({ what: `sshd: forwarding is allowed for ${user} ('restrict' closes it per key)`, fix: fix("DisableForwarding", "yes"), warn: true });
  const env = (settings.get("acceptenv") ?? "").split(/\s+/).filter(Boolean);
  const risky = env.filter((e) => !HARMLESS_ENV.test(e));
  if (risky.length) out.push({ what: `sshd: AcceptEnv ${risky.join(" ")} lets a client set variables the shell sees before the gate`, fix: "remove them from AcceptEnv" });
  const files = (settings.get("authorizedkeysfile") ?? ".ssh/authorized_keys .ssh/authorized_keys2")
    .split(/\s+/)
    .filter(Boolean)
    .map((f) => f.replace(/%h/g, home).replace(/%u/g, user).replace(/%%/g, "%"))
    .map((f) => (path.isAbsolute(f) ? f : path.join(home, f)));
  if (!files.includes(akPath)) out.push({ what: `sshd: AuthorizedKeysFile (${files.join(" ")}) does not include ${akPath}`, fix: "AuthorizedKeysFile .ssh/authorized_keys" });
  for (const f of files) if (f !== akPath && lstatPath(f)) out.push({ what: `${f} exists and sshd reads keys from it too`, fix: `rm ${f}` });
  if (dropinExists && settings.get("permittty") !== "no") out.push({ what: "sshd: the drop-in is not in effect (is sshd_config.d Included?)", fix: "Include /etc/ssh/sshd_config.d/*.conf at the top of sshd_config" });
  return out;
}

/** The key lines: each judged, and the gate's sources found through their configs. */
function keyFindings(akPath: string, out: Change[], notes: string[]): { sources: SourceLayout[]; launchers: Set<string> } {
  const sources: SourceLayout[] = [];
  const launchers = new Set<string>();
  let text: string | null = null;
  try {
    text = readText(akPath);
  } catch (e) {
    out.push({ what: `${akPath}: ${(e as Error).message}`, fix: "run validate-backup install-remote again" });
  }
  out.push(...keyLineFindings(akPath, text ?? ""));
  (text ?? "").split("\n").forEach((raw, i) => {
    const k = parseKeyLine(raw);
    if (!k || "bad" in k) return;
    const where = `${akPath} line ${i + 1}`;
    const gate = gateOf(k);
    if (!gate) return;
    launchers.add(gate.bin);
    try {
      const p = loadConfig(gate.config);
      sources.push({ label: p.label, config: gate.config, root: p.root, state: p.state, audit: p.audit.file, launcher: gate.bin, keepFull: p.housekeeping.keepFull, access: p.access, quota: p.limits.maxStoredBytes });
      const { keepFull, retentionDays } = p.housekeeping;
      notes.push(
        `key '${p.label}': prune keeps ${keepFull} full chain(s) and removes nothing that arrived less than ${retentionDays} day(s) ago (housekeeping.retentionDays): ` +
          "how long someone holding the key must stay unnoticed before a real backup can go",
      );
    } catch (e) {
      // install-remote refuses such a config with the same words: it keeps the settings an admin made.
      out.push({ what: `${where}: ${(e as Error).message}`, fix: `correct ${gate.config}, or remove it and run validate-backup install-remote again` });
    }
  });
  if (text !== null && !sources.length) out.push({ what: `${akPath} holds no key forced through validate-backup`, fix: "validate-backup install-remote --key …" });
  return { sources, launchers };
}

/** `notes`: facts worth showing that are no deviation (each key's retention floor); `keys` receives the keys found. */
export function checkFindings(user: string, sshdConfig: string, schedule: Layout["schedule"], notes: string[] = [], keys: SourceLayout[] = []): Change[] {
  const acct = lookupUser(user);
  if (!acct) return [{ what: `account ${user} does not exist`, fix: `validate-backup install-remote --user ${user} …` }];
  const group = lookupGroup(acct.gid)?.name ?? String(acct.gid);
  const home = canonical(acct.home);
  const settings = sshd.effective(sshdConfig, user);
  const out: Change[] = [];
  const akPath = path.join(home, ".ssh", "authorized_keys");
  const { sources, launchers } = keyFindings(akPath, out, notes);
  keys.push(...sources);
  out.push(...placeFindings(sources));
  out.push(...runnerFindings(schedule, sources.map((s) => s.label)));
  const dropin = sshd.dropinPath(sshdConfig, user);
  const dropinExists = lstatPath(dropin) !== null;
  const programs = [...launchers].map((b) => canonical(path.dirname(path.dirname(b))));
  const program = programs[0] ?? canonical(TOP);
  const layout: Layout = {
    user,
    group,
    home,
    createAccount: false,
    program,
    programFiles: programFiles(program),
    runtime: runtimeFiles(sources.length ? [...new Set(sources.map((s) => loadConfig(s.config).rsync.path))] : []),
    sources,
    authorizedKeys: { path: akPath },
    sysctl: { conf: "/etc/sysctl.d/60-validate-backup.conf", content: sysctlConf() },
    sshd: dropinExists ? { config: sshdConfig, dropin, content: sshd.dropinContent(user) } : undefined,
    schedule,
  };
  const ctx = new Ctx(user, group, settings);
  const steps = buildPlan(layout);
  for (const p of programs.slice(1)) steps.push(...buildPlan({ ...layout, program: p, programFiles: programFiles(p), sources: [], sshd: undefined }).filter((s) => s.path === p));
  // A file's own words ("rewrite X") say what install-remote would do; its purpose says why it matters.
  for (const step of steps) out.push(...inspect(step, ctx).map((c) => (step.kind === "file" && !c.warn ? { ...c, what: `${c.what} (${step.why})` } : c)));
  for (const f of ["rc", "environment"]) {
    const p = path.join(home, ".ssh", f);
    if (lstatPath(p)) out.push({ what: `${p} exists: sshd ${f === "rc" ? "runs it at login" : "may load it into the environment"}`, fix: `rm ${p}` });
  }
  if (typeof settings === "string") out.push({ what: `sshd settings not checked: ${settings}`, fix: `make ${TOOLS_SSHD} -T -f ${sshdConfig} work (as root; on Debian: mkdir -p /run/sshd)`, warn: true });
  else out.push(...sshdFindings(settings, user, home, akPath, dropinExists));
  out.push(...rsyncPullFindings(acct, sources, notes));
  return out;
}

/** Print the findings; the exit code is 1 when any is a deviation. */
export function runCheck(user: string, sshdConfig: string, out: Out, schedule: Layout["schedule"]): number {
  let found: Change[];
  const notes: string[] = [];
  const keys: SourceLayout[] = [];
  try {
    found = checkFindings(user, sshdConfig, schedule, notes, keys);
  } catch (e) {
    out(`check: ${(e as Error).message}`);
    return e instanceof VbError && e.code !== "IO" ? 2 : 4;
  }
  const dev = found.filter((c) => !c.warn);
  for (const n of notes) out(n);
  for (const c of found) {
    out(`${c.warn ? "warning" : "DEVIATION"}: ${c.what}`);
    out(`    fix: ${c.fix}`);
  }
  for (const s of keys) out(`key ${s.label}: ${s.quota === undefined ? "no quota" : `quota ${showSize(s.quota)}`} (limits.maxStoredBytes)`);
  out(dev.length ? `check ${user}: ${dev.length} deviation(s), ${found.length - dev.length} warning(s)` : `check ${user}: ok (${found.length} warning(s))`);
  return dev.length ? 1 : 0;
}

export async function checkMain(args: string[]): Promise<number> {
  let v;
  let schedule: Layout["schedule"];
  try {
    v = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { user: { type: "string" }, "sshd-config": { type: "string", default: sshd.DEFAULT_SSHD_CONFIG }, schedule: { type: "string", default: "auto" }, "schedule-dir": { type: "string" } },
    }).values;
    if (!v.user) throw new Error("--user is required");
    schedule = scheduleOption(v.schedule, v["schedule-dir"]);
    if (process.getuid?.() !== 0) throw new Error("check must run as root (it reads /etc/shadow and sshd's configuration)");
  } catch (e) {
    say(`validate-backup check: ${(e as Error).message}\n${usageText("check")}`, "err");
    return 2;
  }
  return runCheck(v.user, v["sshd-config"], (l) => say(l), schedule);
}
