// When root's housekeeping runs for each key: seal, prune and audit --record-head hourly, and
// verify --stored weekly, from systemd timers where systemd runs, else from a cron.d file. The
// files' contents are built here from the installed config alone, so install-remote writes them
// and check rebuilds and compares them.
import fs from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { VbError } from "../errors.js";
import { absolute } from "./options.js";

export type ScheduleKind = "systemd" | "cron";
/** What install-remote and check are told: auto picks systemd where it runs, else cron. */
export const SCHEDULE_CHOICES = ["auto", "systemd", "cron", "none"] as const;
export type ScheduleChoice = (typeof SCHEDULE_CHOICES)[number];

export const SCHEDULE_DIRS: Record<ScheduleKind, string> = { systemd: "/etc/systemd/system", cron: "/etc/cron.d" };

/** The test systemd itself documents (sd_booted(3)): is this system running systemd now? */
export function systemdRunning(): boolean {
  try {
    return fs.lstatSync("/run/systemd/system").isDirectory();
  } catch {
    return false;
  }
}

export function scheduleKind(choice: ScheduleChoice): ScheduleKind | undefined {
  if (choice === "none") return undefined;
  if (choice === "auto") return systemdRunning() ? "systemd" : "cron";
  return choice;
}

/** --schedule's value, refused unless it is one of SCHEDULE_CHOICES. */
export function scheduleChoice(choice: string): ScheduleChoice {
  if (!(SCHEDULE_CHOICES as readonly string[]).includes(choice)) throw new VbError("BAD_REQUEST", `--schedule must be one of ${SCHEDULE_CHOICES.join(", ")}`);
  return choice as ScheduleChoice;
}

/** --schedule and --schedule-dir, as install-remote and check both take them; undefined: none. */
export function scheduleOption(choice: string, dir: string | undefined): { kind: ScheduleKind; dir: string } | undefined {
  const kind = scheduleKind(scheduleChoice(choice));
  if (!kind) return undefined;
  return { kind, dir: dir === undefined ? SCHEDULE_DIRS[kind] : absolute("schedule-dir", dir) };
}

/**
 * validate-backup-<label> with '.' and '@' made '-': cron skips files in cron.d whose names are not
 * ^[A-Za-z0-9_-]+$ (without a word), and systemd reads '@' in a unit name as a template instance.
 */
export function scheduleName(label: string): string {
  return `validate-backup-${label.replace(/[^A-Za-z0-9_-]/g, "-")}`;
}

// Each path appears unquoted in a cron line (run by /bin/sh, where cron also turns '%' into a
// newline) and in a unit's ExecStart (where '%' and '$' expand): only these characters mean
// themselves in all three.
const PLAIN = /^\/[A-Za-z0-9_./@+,-]*$/;

function plain(p: string): string {
  if (!PLAIN.test(p)) throw new VbError("BAD_REQUEST", `${p.slice(0, 200)}: the housekeeping schedule names this path in a cron line or a unit's ExecStart, where only letters, digits and . / _ @ + , - are safe; choose such a path, or --schedule none and schedule seal and prune yourself`);
  return p;
}

export interface ScheduledSource {
  label: string;
  launcher: string;
  config: string;
  audit: string;
  root: string;
  state: string;
  keepFull: number;
  /** The key's access: a read-only key publishes nothing: no seal, no prune, no weekly verify --stored. */
  access: "append-only" | "read-only";
}

/** Does this key publish? Only such a key gets seal, prune and the weekly verify --stored (a pull key's log holds no hash, its tree is SOURCE's own). */
export function publishes(s: ScheduledSource): boolean {
  return s.access === "append-only";
}

/** The weekly check's unit names beside the hourly ones (plan.ts makes sure no label's names collide). */
export function verifyName(label: string): string {
  return `${scheduleName(label)}-verify`;
}

/**
 * The hourly commands, in order: settle the uploads, drop old chains, then pin the log's head
 * (after both logged); and the weekly check of every stored file against the log.
 */
export function commands(s: ScheduledSource): { seal: string; prune: string; head: string; hourly: string; verify: string; notify: string; metrics: string } {
  const bin = plain(s.launcher);
  return {
    // The three in one: a oneshot unit's ExecStart lines stop at the first failure, `hourly` does not.
    // No --keep-full: prune reads housekeeping.keepFull from the config, so an edit there needs no new schedule.
    hourly: `${bin} hourly --config ${plain(s.config)}`,
    seal: `${bin} seal --config ${plain(s.config)}`,
    prune: `${bin} prune --config ${plain(s.config)}`,
    head: `${bin} audit --record-head --file ${plain(s.audit)}`,
    verify: `${bin} verify --stored --config ${plain(s.config)}`,
    // What `hourly` runs after its steps (monitor/record.ts), for where hourly does not run.
    notify: `${bin} notify --config ${plain(s.config)}`,
    metrics: `${bin} metrics --config-dir ${plain(path.dirname(s.config))}`,
  };
}

/** cron's tail of the hourly line: tell housekeeping.notify what is new, write every key's metrics. */
function monitorTail(c: ReturnType<typeof commands>): string {
  return `${c.notify} >/dev/null; ${c.metrics} >/dev/null`;
}

/** How every schedule file of a key begins: only such a file is ever removed as the key's. */
export function scheduleMark(label: string): string {
  return `# validate-backup: housekeeping of the key '${label}' (`;
}

const HEADER = (s: ScheduledSource, what: string) =>
  [
    `${scheduleMark(s.label)}${what}).`,
    "# Written by validate-backup install-remote, which overwrites edits on its next run; check reports",
    "# them. prune keeps housekeeping.keepFull full chains: change it in the config (or install-remote --keep-full N).",
  ];

/**
 * The minute of the hour this key's cron lines run at, from its label: cron has no random delay,
 * and a fixed minute per key keeps many keys on one host from all walking their trees at once
 * while leaving the file the same on every install (check compares it).
 */
export function cronMinute(label: string): number {
  return crypto.createHash("sha256").update(label).digest().readUInt32BE(0) % 60;
}

export function cronContent(s: ScheduledSource): string {
  const c = commands(s);
  const m = cronMinute(s.label);
  // stdout (the summaries, also in the audit log) is dropped: cron would mail it every hour.
  // stderr, where failures go, still reaches root's mail.
  // A read-only (pull) key's tree is SOURCE's own outgoing data: root neither seals (chowns) nor prunes it.
  if (!publishes(s))
    return [
      ...HEADER(s, "from cron, as systemd does not run here"),
      "SHELL=/bin/sh",
      "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
      "# hourly: record the audit log's chain head (a read-only key: no seal, no prune)",
      `${m} * * * * root ${c.head} >/dev/null; ${monitorTail(c)}`,
      "",
    ].join("\n");
  return [
    ...HEADER(s, "from cron, as systemd does not run here"),
    "SHELL=/bin/sh",
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "# hourly: seal what has settled, then record the audit log's chain head",
    `${m} * * * * root ${c.seal} >/dev/null; ${c.head} >/dev/null; ${monitorTail(c)}`,
    "# daily: remove whole chains older than the newest housekeeping.keepFull full ones (the config's)",
    `${(m + 30) % 60} 4 * * * root ${c.prune} >/dev/null`,
    // A weekday from the label as well: many keys do not all read their whole trees on one day.
    ...(publishes(s) ? ["# weekly: every stored file against the hash the audit log recorded (differences reach root's mail)", `${m} 5 * * ${m % 7} root ${c.verify} >/dev/null`] : []),
    "",
  ].join("\n");
}

// ProtectSystem=full makes /usr, /boot, /efi and /etc read-only for the run: only where nothing
// seal, prune or record-head writes (root, state, the log and its .head file) lies below them.
const READ_ONLY_UNDER_FULL = ["/usr", "/boot", "/efi", "/etc"];

/** A oneshot service run as root; `run` are its ExecStart lines with their comments. */
function service(s: ScheduledSource, unit: string, what: string, run: string[]): string {
  const written = [s.root, s.state, s.audit];
  const protect = written.every((p) => !READ_ONLY_UNDER_FULL.some((d) => p === d || p.startsWith(d + "/")));
  return [
    ...HEADER(s, `started by ${unit}.timer`),
    "[Unit]",
    `Description=validate-backup housekeeping of ${s.label}: ${what}`,
    "",
    "[Service]",
    "Type=oneshot",
    ...run,
    "Nice=10",
    "IOSchedulingClass=idle",
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    ...(protect ? ["ProtectSystem=full"] : ["# No ProtectSystem: the backup root, state or log lies below /usr, /boot, /efi or /etc."]),
    "",
  ].join("\n");
}

export function serviceContent(s: ScheduledSource): string {
  const c = commands(s);
  if (!publishes(s))
    return service(s, scheduleName(s.label), "record the audit log's head", [
      "# A read-only (pull) key: its tree is SOURCE's own outgoing data, which root neither seals",
      "# (chowns) nor prunes. Only the audit log's chain head is recorded.",
      `ExecStart=${c.head}`,
      "# Then tell housekeeping.notify what is new, and write every key's metrics.",
      `ExecStart=${c.notify}`,
      `ExecStart=${c.metrics}`,
    ]);
  return service(s, scheduleName(s.label), "seal, prune, record the audit log's head", [
    "# Runs as root: seal and prune change owners in the backup account's tree. `hourly` runs seal,",
    "# prune and audit --record-head in turn, each even if one before failed, and exits with the",
    "# worst status: a failed step fails the unit (systemctl --failed) without stopping the others.",
    `ExecStart=${c.hourly}`,
    "# prune exits 5 when nothing arrived for too long: a warning it has logged, not a failed run.",
    "SuccessExitStatus=5",
  ]);
}

export function verifyServiceContent(s: ScheduledSource): string {
  return service(s, verifyName(s.label), "every stored file against the hashes in the audit log", [
    "# Runs as root: it reads every stored file and the state directory. Exit 1 (a file changed,",
    "# missing or unrecorded) fails the unit: systemctl --failed and the journal show it.",
    `ExecStart=${commands(s).verify}`,
  ]);
}

function timer(s: ScheduledSource, unit: string, when: string, calendar: string, delay: string): string {
  return [
    ...HEADER(s, `starts ${unit}.service`),
    "[Unit]",
    `Description=validate-backup housekeeping of ${s.label}, ${when}`,
    "",
    "[Timer]",
    `OnCalendar=${calendar}`,
    "# Keys on one host do not all walk their trees at the same moment.",
    `RandomizedDelaySec=${delay}`,
    "# A run missed while the host was down happens at the next boot.",
    "Persistent=true",
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
}

export function timerContent(s: ScheduledSource): string {
  return timer(s, scheduleName(s.label), "hourly", "hourly", "20min");
}

export function verifyTimerContent(s: ScheduledSource): string {
  return timer(s, verifyName(s.label), "weekly: verify --stored", "weekly", "6h");
}
