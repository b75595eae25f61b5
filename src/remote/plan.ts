// The locked-down layout of a backup account on REMOTE, as data: a list of steps, each naming a
// path, who owns it, its mode and (for files) its content. install-remote applies the list; check
// builds the same list from what is installed and reports every difference.
import path from "node:path";
import { scheduleName, verifyName, scheduleMark, publishes, cronContent, serviceContent, timerContent, verifyServiceContent, verifyTimerContent, type ScheduleKind } from "./schedule.js";
import { VbError } from "../errors.js";
import { showSize } from "../config/size.js";

export type Owner = "root" | { user: true } | { group: true };

interface Base {
  path: string;
  why: string;
}
/** The account: exists, its own group, login shell, no password. */
export interface AccountStep extends Base {
  kind: "account";
  user: string;
  group: string;
  shell: string;
  create: boolean;
}
export interface DirStep extends Base {
  kind: "dir";
  owner: "root" | "user";
  group: "root" | "group";
  mode: number;
}
/** content undefined: any content is fine (check), only owner and mode matter. */
export interface FileStep extends Base {
  kind: "file";
  owner: "root";
  group: "root";
  mode: number;
  content?: string;
}
/** The audit log: the account may append, not truncate or remove (chattr +a). */
export interface LogStep extends Base {
  kind: "log";
  owner: "root";
  group: "group";
  mode: number;
}
/** Every directory above path: root-owned, not replaceable by the account, passable by it. */
export interface AncestorsStep extends Base {
  kind: "ancestors";
}
/** path and everything below it: root-owned, not writable by the account. */
export interface TreeStep extends Base {
  kind: "tree";
  /** Only these paths below path are walked (undefined: all); 'x/' is the directory x alone. */
  only?: string[];
  /** Absolute paths not to enter: directories with steps of their own. */
  skip: string[];
  /** A symbolic link (or device, FIFO, socket) has no business in a home: removed. */
  strangers: "remove" | "keep";
  self: boolean;
}
export interface SysctlStep extends Base {
  kind: "sysctl";
  value: string;
}
export interface SshdStep extends Base {
  kind: "sshd-reload";
  dropin: string;
}
/** path: the timer unit; enabled and started, systemd's units reloaded when it or service changed. */
export interface TimerStep extends Base {
  kind: "timer-enable";
  unit: string;
  service: string;
}
/**
 * A file of ours that no longer belongs (the weekly units of a key turned read-only, a removed key's
 * files): removed, a timer disabled and stopped first. What does not start with `mark` is not ours: left, and said.
 */
export interface AbsentStep extends Base {
  kind: "absent";
  mark?: string;
  /** A systemd unit file: a timer is disabled and stopped before it goes, systemd reloaded after. */
  unit?: string;
}
export type Step = AccountStep | DirStep | FileStep | LogStep | AncestorsStep | TreeStep | SysctlStep | SshdStep | TimerStep | AbsentStep;

export interface SourceLayout {
  label: string;
  config: string;
  configContent?: string;
  root: string;
  state: string;
  audit: string;
  /** The bin/validate-backup its key line runs; housekeeping runs the same program. */
  launcher: string;
  /** Full chains prune keeps (housekeeping.keepFull). */
  keepFull: number;
  /** The config's access (a read-only key gets no weekly verify --stored). */
  access: "append-only" | "read-only";
  /** limits.maxStoredBytes (install-remote --quota); undefined: no quota. */
  quota?: number;
}

export interface Layout {
  user: string;
  group: string;
  home: string;
  createAccount: boolean;
  /** Top of the program (holds bin/validate-backup). */
  program: string;
  /** What node loads from it, relative (see programFiles). */
  programFiles: string[];
  /** The files the launcher runs before our code: its shell, env and node. */
  runtime: string[];
  sources: SourceLayout[];
  authorizedKeys: { path: string; content?: string };
  sysctl: { conf: string; content?: string };
  sshd?: { config: string; dropin: string; content: string };
  /** Where and how seal, prune and record-head are scheduled; undefined: the admin does it. */
  schedule?: { kind: ScheduleKind; dir: string };
}

export const SHELL = "/bin/sh";
export const SYSCTLS: Record<string, string> = { "fs.protected_symlinks": "1", "fs.protected_hardlinks": "1" };

export function sysctlConf(): string {
  return (
    "# validate-backup: root never follows links planted in sticky directories; no hard links to others' files\n" +
    Object.entries(SYSCTLS)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join("")
  );
}

function within(parent: string, p: string): boolean {
  return p === parent || p.startsWith(parent + "/");
}

export function buildPlan(l: Layout): Step[] {
  const steps: Step[] = [];
  const managed = l.sources.flatMap((s) => [s.root, s.state, path.dirname(s.audit), path.dirname(s.config)]);
  steps.push({ kind: "account", path: l.home, user: l.user, group: l.group, shell: SHELL, create: l.createAccount, why: "the backup account: own group, /bin/sh, no password" });

  steps.push({ kind: "file", path: l.sysctl.conf, owner: "root", group: "root", mode: 0o644, content: l.sysctl.content, why: "kernel link protections, at boot" });
  for (const [name, value] of Object.entries(SYSCTLS)) steps.push({ kind: "sysctl", path: name, value, why: "kernel link protections, now" });

  steps.push({ kind: "ancestors", path: l.home, why: "no one but root can move the home" });
  steps.push({ kind: "dir", path: l.home, owner: "root", group: "group", mode: 0o750, why: "the account cannot rename .ssh or plant dotfiles" });
  steps.push({ kind: "dir", path: path.join(l.home, ".ssh"), owner: "root", group: "root", mode: 0o755, why: "sshd reads the keys from here" });
  steps.push({
    kind: "tree",
    path: l.home,
    skip: managed.filter((m) => within(l.home, m) && m !== l.home),
    strangers: "remove",
    self: false,
    why: "no dotfile the account could write (bash reads ~/.bashrc before the forced command)",
  });

  steps.push({ kind: "ancestors", path: l.program, why: "no one but root can swap the program" });
  steps.push({ kind: "tree", path: l.program, only: l.programFiles, skip: [], strangers: "keep", self: true, why: "the launcher, node's modules and our code are root's" });
  for (const file of l.runtime) {
    steps.push({ kind: "ancestors", path: file, why: "the launcher's runtime stays root's" });
    steps.push({ kind: "tree", path: file, skip: [], strangers: "keep", self: true, why: "the launcher's runtime stays root's" });
  }

  for (const s of l.sources) {
    const cdir = path.dirname(s.config);
    const ldir = path.dirname(s.audit);
    steps.push({ kind: "ancestors", path: cdir, why: `[${s.label}] config directory` });
    steps.push({ kind: "dir", path: cdir, owner: "root", group: "root", mode: 0o755, why: `[${s.label}] config directory` });
    steps.push({ kind: "file", path: s.config, owner: "root", group: "root", mode: 0o644, content: s.configContent, why: `[${s.label}] the key's policy (${s.quota === undefined ? "no quota" : `quota ${showSize(s.quota)}`})` });
    steps.push({ kind: "ancestors", path: ldir, why: `[${s.label}] audit log directory` });
    steps.push({ kind: "dir", path: ldir, owner: "root", group: "root", mode: 0o755, why: `[${s.label}] audit log directory: the account cannot remove the log` });
    steps.push({ kind: "log", path: s.audit, owner: "root", group: "group", mode: 0o660, why: `[${s.label}] audit log: append only` });
    steps.push({ kind: "ancestors", path: s.root, why: `[${s.label}] no one but root can move the backup root` });
    steps.push({ kind: "dir", path: s.root, owner: "root", group: "group", mode: 0o3770, why: `[${s.label}] backup root: group-writable, sticky, setgid` });
    steps.push({ kind: "dir", path: s.state, owner: "user", group: "group", mode: 0o700, why: `[${s.label}] state beside the root (uploads in flight, staging)` });
  }

  if (l.schedule && l.sources.length) steps.push(...scheduleSteps(l.schedule, l.sources));

  steps.push({ kind: "file", path: l.authorizedKeys.path, owner: "root", group: "root", mode: 0o644, content: l.authorizedKeys.content, why: "the key, forced through the gate" });
  if (l.sshd) {
    steps.push({ kind: "file", path: l.sshd.dropin, owner: "root", group: "root", mode: 0o644, content: l.sshd.content, why: "sshd: publickey only, no forwarding, no tty" });
    steps.push({ kind: "sshd-reload", path: l.sshd.config, dropin: l.sshd.dropin, why: "sshd -t, then reload" });
  }
  return steps;
}

/** Per key: a cron.d file, or a service and timer unit and the step that enables the timer. */
function scheduleSteps(sch: { kind: ScheduleKind; dir: string }, sources: SourceLayout[]): Step[] {
  const steps: Step[] = [
    { kind: "ancestors", path: sch.dir, why: "no one but root can swap root's schedule" },
    { kind: "dir", path: sch.dir, owner: "root", group: "root", mode: 0o755, why: `${sch.kind === "cron" ? "cron.d" : "systemd units"}: root's schedule` },
  ];
  const named = new Map<string, string>();
  for (const s of sources) {
    const name = scheduleName(s.label);
    // Labels differing only in '.', '@' and '-' would share one file and overwrite each other; so
    // would a label ending in '-verify' and the weekly units of the label before it.
    for (const n of [name, verifyName(s.label)]) {
      const other = named.get(n);
      if (other !== undefined && other !== s.label) throw new VbError("BAD_REQUEST", `the keys '${other}' and '${s.label}' would share the schedule ${n}: give one of them another --label`);
      named.set(n, s.label);
    }
    const why = `[${s.label}] housekeeping: seal, prune (keeping ${s.keepFull} full chains), record the audit head${publishes(s) ? ", verify --stored" : ""}`;
    if (sch.kind === "cron") {
      steps.push({ kind: "file", path: path.join(sch.dir, name), owner: "root", group: "root", mode: 0o644, content: cronContent(s), why: `${why}; from cron, prune daily, verify --stored weekly, the rest hourly` });
      continue;
    }
    steps.push(...units(sch.dir, name, serviceContent(s), timerContent(s), `${why}`, "hourly", s.label));
    if (publishes(s)) steps.push(...units(sch.dir, verifyName(s.label), verifyServiceContent(s), verifyTimerContent(s), `[${s.label}] verify --stored`, "weekly", s.label));
    // A key switched to read-only keeps no weekly verify --stored from its append-only days.
    else steps.push(...absentUnits(sch.dir, verifyName(s.label), s.label, `[${s.label}] a read-only key gets no weekly verify --stored`));
  }
  return steps;
}

/** A systemd service and its timer, and the step that enables the timer. */
function units(dir: string, name: string, serviceText: string, timerText: string, why: string, when: string, label: string): Step[] {
  const service = path.join(dir, `${name}.service`);
  const timer = path.join(dir, `${name}.timer`);
  return [
    { kind: "file", path: service, owner: "root", group: "root", mode: 0o644, content: serviceText, why: `${why}: the service` },
    { kind: "file", path: timer, owner: "root", group: "root", mode: 0o644, content: timerText, why: `${why}: its timer, ${when}` },
    { kind: "timer-enable", path: timer, unit: `${name}.timer`, service, why: `[${label}] the timer enabled and started` },
  ];
}

/** The timer (disabled and stopped first) and the service of a unit pair that must not be there. */
export function absentUnits(dir: string, name: string, label: string, why: string): Step[] {
  return [".timer", ".service"].map((ext): Step => ({ kind: "absent", path: path.join(dir, `${name}${ext}`), unit: `${name}${ext}`, mark: scheduleMark(label), why }));
}
