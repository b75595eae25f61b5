// Will anything run the housekeeping schedule? A file in /etc/cron.d is read only by a running cron
// daemon, a timer in systemd's unit directory fires only under a running systemd. Writing either
// where nothing runs it leaves a key with no seal, no prune and no recorded audit head, while
// install and check would say ok: this names that case, for install-remote's plan and for check.
import fs from "node:fs";
import path from "node:path";
import { SCHEDULE_DIRS, scheduleName, systemdRunning, type ScheduleKind } from "./schedule.js";
import type { Change } from "./change.js";

/** The process names of the cron daemons that read /etc/cron.d (Debian's cron; cronie, busybox). */
const CRON_DAEMONS = new Set(["cron", "crond"]);
/** Where their binaries are installed. */
const CRON_BINARIES = ["/usr/sbin/cron", "/usr/sbin/crond", "/sbin/crond", "/usr/bin/crond"];
/** systemd-cron turns /etc/cron.d into timers at boot: under a running systemd, that is a cron too. */
const SYSTEMD_CRON_GENERATOR = ["/lib/systemd/system-generators/systemd-crontab-generator", "/usr/lib/systemd/system-generators/systemd-crontab-generator"];
const NONE_FIX = "or --schedule none and run `validate-backup hourly --config …` from what does run here";

/** A cron daemon running as root in this system's process table (a container sees its own only, as its cron.d does). */
export function cronRunning(): boolean {
  let pids: string[];
  try {
    pids = fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    return false;
  }
  for (const pid of pids) {
    try {
      // Owned by root: a process of the backup account named "cron" proves nothing.
      if (fs.statSync(`/proc/${pid}`).uid !== 0) continue;
      if (CRON_DAEMONS.has(fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim())) return true;
    } catch {
      /* gone meanwhile */
    }
  }
  return systemdRunning() && SYSTEMD_CRON_GENERATOR.some((p) => fs.existsSync(p));
}

function cronInstalled(): string | undefined {
  return CRON_BINARIES.find((p) => fs.existsSync(p));
}

/** Deviations: the schedule lies where its runner reads it, but that runner does not run. */
export function runnerFindings(schedule: { kind: ScheduleKind; dir: string } | undefined, labels: string[]): Change[] {
  if (!schedule || !labels.length) return [];
  const files = labels.map((l) => path.join(schedule.dir, scheduleName(l) + (schedule.kind === "systemd" ? ".timer" : ""))).join(", ");
  const home = SCHEDULE_DIRS[schedule.kind];
  if (schedule.kind === "cron") {
    if (schedule.dir !== home)
      return [{ what: `the housekeeping schedule is in ${schedule.dir}, which cron does not read (it reads ${home}): ${files} run only if you arrange it`, fix: `--schedule-dir ${home}, or have your cron read ${schedule.dir}`, warn: true }];
    if (cronRunning()) return [];
    const bin = cronInstalled();
    return [
      {
        what: `no cron daemon runs here (no root process named ${[...CRON_DAEMONS].join(" or ")}${bin ? `, although ${bin} is installed` : ", none installed"}): ${files} would never run: no seal, no prune, no recorded audit head`,
        fix: bin ? `start it and have it start at boot (systemctl enable --now cron, or service cron start), ${NONE_FIX}` : `install and start cron (apt-get install cron; dnf install cronie), ${systemdRunning() ? "or --schedule systemd, " : ""}${NONE_FIX}`,
      },
    ];
  }
  // A unit directory systemd does not read is already said by the timer's own step.
  if (schedule.dir !== home || systemdRunning()) return [];
  return [
    {
      what: `systemd does not run here (no /run/systemd/system): the timers ${files} would never fire: no seal, no prune, no recorded audit head`,
      fix: `--schedule cron (with a running cron daemon), ${NONE_FIX}`,
    },
  ];
}
