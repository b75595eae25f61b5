// Steps -> the differences between the plan and the live system, each with the command a person
// would run to fix it and the code that does. install-remote runs the code; check prints the fix.
import fs from "node:fs";
import path from "node:path";
import type { Step, DirStep, FileStep, LogStep, AncestorsStep, TreeStep, SysctlStep, SshdStep, TimerStep, AbsentStep } from "./plan.js";
import { inspectAccount } from "./account.js";
import type { Change, Ctx } from "./change.js";
import { tool, mustTool, readSysctl, writeSysctl, TOOLS } from "./system.js";
import * as sshd from "./sshd.js";
import { systemdRunning, SCHEDULE_DIRS } from "./schedule.js";
import { type Who, STICKY, modeStr, writableBy, searchableBy, canReplace, ancestorsOf, withParent, lstatPath, fixOwnerMode, readText, writeTextAt, moveAside, walkTree, type TreeEntry } from "./fsops.js";
import { at, lstatAtOrNull } from "../fsat.js";
import { VbError } from "../errors.js";

const C = fs.constants;

function ownerOf(s: DirStep | FileStep | LogStep, ctx: Ctx): { uid: number; gid: number; label: string } | null {
  const ids = ctx.ids();
  const uid = s.owner === "root" ? 0 : ids?.uid;
  const gid = s.group === "root" ? 0 : ids?.gid;
  const label = `${s.owner === "root" ? "root" : ctx.user}:${s.group === "root" ? "root" : ctx.group}`;
  return uid === undefined || gid === undefined ? { uid: -1, gid: -1, label } : { uid, gid, label };
}

/** Owner and mode differences of something that exists. */
function attrChanges(p: string, st: fs.Stats, want: { uid: number; gid: number; label: string }, mode: number, after?: () => void): Change[] {
  const what: string[] = [];
  if (st.uid !== want.uid || st.gid !== want.gid) what.push(`owner ${st.uid}:${st.gid} -> ${want.label}`);
  if ((st.mode & 0o7777) !== mode) what.push(`mode ${modeStr(st.mode)} -> ${modeStr(mode)}`);
  if (!what.length) return [];
  return [
    {
      what: `${p}: ${what.join(", ")}`,
      fix: `chown ${want.label} ${p} && chmod ${modeStr(mode)} ${p}`,
      do: () => {
        if (want.uid < 0) throw new VbError("IO", `${p}: the account does not exist yet`);
        withParent(p, (dirFd, name) => {
          const now = lstatAtOrNull(dirFd, name);
          if (!now || now.isSymbolicLink()) throw new VbError("IO", `${p} changed meanwhile; run again`);
          fixOwnerMode(dirFd, name, now, want.uid, want.gid, mode);
        });
        after?.();
      },
    },
  ];
}

function aside(p: string, st: fs.Stats): Change {
  return {
    what: `${p} is a ${kindOf(st)}, not what belongs here: moved aside`,
    fix: `mv ${p} ${p}.aside`,
    do: () => withParent(p, (dirFd, name) => void moveAside(dirFd, name)),
  };
}

export function kindOf(st: fs.Stats): string {
  return st.isSymbolicLink() ? "symbolic link" : st.isDirectory() ? "directory" : st.isFile() ? "file" : "special file";
}

function inspectDir(s: DirStep, ctx: Ctx): Change[] {
  const want = ownerOf(s, ctx)!;
  const st = lstatPath(s.path);
  const create: Change = {
    what: `create directory ${s.path} ${want.label} ${modeStr(s.mode)}`,
    fix: `install -d -o ${want.label.replace(":", " -g ")} -m ${modeStr(s.mode)} ${s.path}`,
    do: () =>
      withParent(s.path, (dirFd, name) => {
        fs.mkdirSync(at(dirFd, name), 0o700);
        fixOwnerMode(dirFd, name, lstatAtOrNull(dirFd, name)!, want.uid, want.gid, s.mode);
      }),
  };
  if (!st) return [create];
  if (!st.isDirectory()) return [aside(s.path, st), create];
  return attrChanges(s.path, st, want, s.mode);
}

function inspectFile(s: FileStep, ctx: Ctx): Change[] {
  const want = ownerOf(s, ctx)!;
  const st = lstatPath(s.path);
  const write = (what: string): Change => ({
    what,
    fix: s.content === undefined ? "run validate-backup install-remote again" : `write ${s.path} (validate-backup install-remote)`,
    do: s.content === undefined ? undefined : () => withParent(s.path, (dirFd, name) => writeTextAt(dirFd, name, s.content!, want.uid, want.gid, s.mode)),
  });
  if (!st) return [write(`create ${s.path} ${want.label} ${modeStr(s.mode)}`)];
  if (!st.isFile()) return [aside(s.path, st), write(`create ${s.path}`)];
  if (s.content !== undefined) {
    const have = readText(s.path) ?? "";
    if (have !== s.content) return [write(`rewrite ${s.path} ${want.label} ${modeStr(s.mode)}: ${firstDifference(have, s.content)}`)];
  }
  return attrChanges(s.path, st, want, s.mode);
}

/** Where a file's text first departs from what belongs there, for a person to see what was edited. */
function firstDifference(have: string, want: string): string {
  const h = have.split("\n");
  const w = want.split("\n");
  const i = h.findIndex((line, n) => line !== w[n]);
  const n = i < 0 ? h.length : i;
  const show = (l: string | undefined) => (l === undefined ? "(end of file)" : `'${l.length > 160 ? `${l.slice(0, 160)}…` : l}'`);
  return `line ${n + 1} is ${show(h[n])}, expected ${show(w[n])}`;
}

/** 'a' among the flags lsattr prints, or the reason it cannot be known. */
export function appendOnly(p: string): boolean | string {
  const r = tool("lsattr", ["-d", p]);
  if (r.status !== 0) return r.stderr.trim() || "lsattr failed";
  return /a/.test(r.stdout.split(/\s/)[0] ?? "");
}

function inspectLog(s: LogStep, ctx: Ctx): Change[] {
  const want = ownerOf(s, ctx)!;
  const st = lstatPath(s.path);
  const setA: Change = {
    what: `${s.path}: append-only (chattr +a): the account may add lines, never truncate or remove the log`,
    fix: `${TOOLS.chattr} +a ${s.path}`,
    do: () => void mustTool("chattr", ["+a", s.path]),
  };
  if (!st) {
    const create: Change = {
      what: `create ${s.path} ${want.label} ${modeStr(s.mode)}`,
      fix: `install -o root -g ${ctx.group} -m ${modeStr(s.mode)} /dev/null ${s.path}`,
      do: () =>
        withParent(s.path, (dirFd, name) => {
          fs.closeSync(fs.openSync(at(dirFd, name), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600));
          fixOwnerMode(dirFd, name, lstatAtOrNull(dirFd, name)!, want.uid, want.gid, s.mode);
        }),
    };
    return [create, { ...setA, do: () => trySetA(s.path) }];
  }
  if (!st.isFile()) return [{ what: `${s.path} is a ${kindOf(st)}, not the audit log`, fix: `move it away, then run validate-backup install-remote again` }];
  const flag = appendOnly(s.path);
  // chmod and chown of an append-only file fail even for root: lift the flag around them.
  const attrs = attrChanges(s.path, st, want, s.mode).map((c) => ({
    ...c,
    do: () => {
      if (flag === true) mustTool("chattr", ["-a", s.path]);
      c.do!();
      if (flag === true) mustTool("chattr", ["+a", s.path]);
    },
  }));
  if (flag === true) return attrs;
  if (typeof flag === "string") return [...attrs, unsupported(s.path, flag)];
  return [...attrs, { ...setA, do: () => trySetA(s.path) }];
}

function unsupported(p: string, why: string): Change {
  return {
    what: `${p}: the filesystem does not support append-only files (${why}); the account could truncate its audit log. Put the log directory on ext4, xfs or btrfs`,
    fix: "--log-dir on a filesystem with chattr +a",
    warn: true,
  };
}

function trySetA(p: string): void {
  const r = tool("chattr", ["+a", p]);
  if (r.status !== 0) process.stdout.write(`  ! ${unsupported(p, r.stderr.trim()).what}\n`);
}

function inspectAncestors(s: AncestorsStep, ctx: Ctx): Change[] {
  const who = ctx.ids()?.who;
  const out: Change[] = [];
  const chain = [...ancestorsOf(s.path), s.path];
  for (let i = 0; i < chain.length - 1; i++) {
    const dir = chain[i]!;
    const st = lstatPath(dir);
    if (!st) {
      out.push({
        what: `create directory ${dir} root:root 0755`,
        fix: `install -d -m 0755 ${dir}`,
        do: () => withParent(dir, (dirFd, name) => {
          fs.mkdirSync(at(dirFd, name), 0o700);
          fixOwnerMode(dirFd, name, lstatAtOrNull(dirFd, name)!, 0, 0, 0o755);
        }),
      });
      continue;
    }
    if (!st.isDirectory()) {
      out.push({ what: `${dir} is a ${kindOf(st)}: the layout needs a real directory here`, fix: `give ${s.path} a path without links` });
      break;
    }
    const child = lstatPath(chain[i + 1]!);
    let mode = st.mode & 0o7777;
    const why: string[] = [];
    if (st.uid !== 0) why.push(`owned by uid ${st.uid}, not root`);
    if (who && canReplace(st, child, who)) {
      mode &= ~(0o002 | (who.gids.has(st.gid) ? 0o020 : 0));
      why.push(`${ctx.user} could rename what is in it`);
    } else if (!who && st.mode & 0o002 && !(st.mode & STICKY)) {
      mode &= ~0o002;
      why.push("world-writable");
    }
    if (who && !searchableBy(st, who)) {
      mode |= 0o001;
      why.push(`${ctx.user} cannot pass through it`);
    }
    if (!why.length) continue;
    const uid = 0;
    out.push({
      what: `${dir}: ${why.join("; ")}`,
      fix: `chown root ${dir} && chmod ${modeStr(mode)} ${dir}`,
      do: () => withParent(dir, (dirFd, name) => fixOwnerMode(dirFd, name, lstatAtOrNull(dirFd, name)!, uid, st.gid, mode)),
    });
  }
  return out;
}

/** One entry of a tree: root-owned and not writable by the account, or removed if it is a stranger. */
function entryChange(e: TreeEntry, s: TreeStep, who: Who | undefined): Change | null {
  const { st } = e;
  const plain = st.isFile() || st.isDirectory();
  if (!plain && s.strangers === "remove")
    return {
      what: `${e.path}: a ${kindOf(st)} in the home: removed`,
      fix: `rm ${e.path}`,
      do: () =>
        withParent(e.path, (dirFd, name) => {
          if (lstatAtOrNull(dirFd, name)?.ino === st.ino) fs.unlinkSync(at(dirFd, name));
        }),
    };
  if (!plain && !st.isSymbolicLink()) return { what: `${e.path}: a ${kindOf(st)} among the program's files`, fix: `rm ${e.path}` };
  const bad = st.uid !== 0 || (who ? writableBy(st, who) : (st.mode & 0o002) !== 0 && !st.isSymbolicLink());
  if (!bad) return null;
  const gid = who?.gids.has(st.gid) ? 0 : st.gid;
  const mode = st.isSymbolicLink() ? 0 : st.mode & 0o7777 & ~0o022 & ~(st.isFile() ? 0o6000 : 0);
  const dirPath = path.dirname(e.path);
  return {
    what: `${e.path}: owner ${st.uid}:${st.gid} mode ${modeStr(st.mode)}, writable by ${who ? "the account" : "others"} -> root:${gid} ${st.isSymbolicLink() ? "" : modeStr(mode)}`.trimEnd(),
    fix: st.isSymbolicLink() ? `chown -h root ${e.path}` : `chown root ${e.path} && chmod go-w ${e.path}`,
    // Re-walk from '/': the tree's descriptors are closed by the time a change is applied.
    do: () =>
      withParent(e.path, (dirFd, name) => {
        const now = lstatAtOrNull(dirFd, name);
        if (!now || now.ino !== st.ino) throw new VbError("IO", `${e.path} changed meanwhile; run again (in ${dirPath})`);
        fixOwnerMode(dirFd, name, now, 0, gid, mode);
      }),
  };
}

function inspectTree(s: TreeStep, ctx: Ctx): Change[] {
  const who = ctx.ids()?.who;
  const out: Change[] = [];
  const top = lstatPath(s.path);
  if (!top) return s.self ? [{ what: `${s.path} is missing`, fix: `reinstall ${s.path}` }] : [];
  const add = (e: TreeEntry) => {
    const c = entryChange(e, s, who);
    if (c) out.push(c);
  };
  if (s.self) withParent(s.path, (dirFd, name) => add({ path: s.path, dirFd, name, st: top }));
  if (!top.isDirectory()) return out;
  if (s.only) {
    for (const rel of s.only) {
      const p = path.join(s.path, rel);
      const st = lstatPath(p);
      if (!st) continue;
      withParent(p, (dirFd, n) => add({ path: p, dirFd, name: n, st }));
      if (st.isDirectory() && !rel.endsWith("/")) walkTree(p, new Set(s.skip), add);
    }
  } else walkTree(s.path, new Set(s.skip), add);
  return out;
}

function inspectSysctl(s: SysctlStep): Change[] {
  const now = readSysctl(s.path);
  if (now === s.value) return [];
  return [{ what: `${s.path} = ${now ?? "(unknown)"} -> ${s.value}`, fix: `sysctl -w ${s.path}=${s.value}`, do: () => writeSysctl(s.path, s.value) }];
}

function inspectSshd(s: SshdStep, ctx: Ctx): Change[] {
  if (!ctx.changed.has(s.dropin)) return [];
  return [
    {
      what: `validate the sshd configuration (sshd -t -f ${s.path}) and reload sshd`,
      fix: `${TOOLS.sshd} -t -f ${s.path} && systemctl reload ssh`,
      do: () => {
        try {
          sshd.validate(s.path);
        } catch (e) {
          // After remove-key took the drop-in out there is none to move: the rest was broken before.
          const present = lstatPath(s.dropin) !== null;
          if (present) withParent(s.dropin, (dirFd, name) => fs.renameSync(at(dirFd, name), at(dirFd, `${name}.rejected`)));
          throw new VbError("BAD_REQUEST", `${(e as Error).message}${present ? `; the drop-in was moved to ${s.dropin}.rejected` : ""}`);
        }
        process.stdout.write(`  ${sshd.reload(s.path, ctx.user)}\n`);
      },
    },
  ];
}

/**
 * A timer is enabled (at boot) and started; after its unit files changed, systemd reads them again.
 * Where systemd does not run, or the units lie where it does not look, this is a warning saying so,
 * never a silent skip.
 */
function inspectTimer(s: TimerStep, ctx: Ctx): Change[] {
  const fix = `${TOOLS.systemctl} daemon-reload && ${TOOLS.systemctl} enable --now ${s.unit}`;
  if (path.dirname(s.path) !== SCHEDULE_DIRS.systemd) return [{ what: `${s.unit} is in ${path.dirname(s.path)}, where systemd does not look for units: not enabled`, fix: `--schedule-dir ${SCHEDULE_DIRS.systemd}, or enable it by hand`, warn: true }];
  if (!systemdRunning()) return [{ what: `systemd is not running (no /run/systemd/system): ${s.unit} is written but not enabled`, fix, warn: true }];
  const reread = ctx.changed.has(s.path) || ctx.changed.has(s.service);
  const state = tool("systemctl", ["is-enabled", s.unit]);
  const enabled = state.status === 0 && state.stdout.trim() === "enabled";
  if (enabled && !reread) return [];
  return [
    {
      what: reread ? `systemd reads the changed units again, ${s.unit} enabled and started` : `${s.unit} is ${state.stdout.trim() || "not enabled"}: enable and start it`,
      fix,
      do: () => {
        mustTool("systemctl", ["daemon-reload"]);
        mustTool("systemctl", ["enable", "--now", s.unit]);
      },
    },
  ];
}

function inspectAbsent(s: AbsentStep): Change[] {
  const st = lstatPath(s.path);
  if (!st) return [];
  if (!st.isFile()) return [{ what: `${s.path} is a ${kindOf(st)}, not the file of ours that went: left alone`, fix: `look at it; remove it by hand if it is not needed`, warn: true }];
  if (s.mark !== undefined && !(readText(s.path) ?? "").startsWith(s.mark))
    return [{ what: `${s.path} does not start with '${s.mark}': not written by validate-backup for this key, left alone`, fix: `look at it; remove it by hand if it is not needed`, warn: true }];
  // systemctl only where systemd runs and reads this directory; elsewhere nothing loaded the unit.
  const systemd = s.unit !== undefined && path.dirname(s.path) === SCHEDULE_DIRS.systemd && systemdRunning();
  const timer = systemd && s.unit!.endsWith(".timer");
  return [
    {
      what: `remove ${s.path}${timer ? ` (after systemctl disable --now ${s.unit})` : ""}`,
      fix: [...(timer ? [`${TOOLS.systemctl} disable --now ${s.unit}`] : []), `rm ${s.path}`, ...(systemd ? [`${TOOLS.systemctl} daemon-reload`] : [])].join(" && "),
      do: () => {
        if (timer) mustTool("systemctl", ["disable", "--now", s.unit!]);
        withParent(s.path, (dirFd, name) => {
          const now = lstatAtOrNull(dirFd, name);
          if (!now) return;
          if (now.ino !== st.ino || now.dev !== st.dev) throw new VbError("IO", `${s.path} changed meanwhile; run again`);
          fs.unlinkSync(at(dirFd, name));
        });
        if (systemd) mustTool("systemctl", ["daemon-reload"]);
      },
    },
  ];
}

export function inspect(step: Step, ctx: Ctx): Change[] {
  switch (step.kind) {
    case "account":
      return inspectAccount(step, ctx);
    case "dir":
      return inspectDir(step, ctx);
    case "file":
      return inspectFile(step, ctx);
    case "log":
      return inspectLog(step, ctx);
    case "ancestors":
      return inspectAncestors(step, ctx);
    case "tree":
      return inspectTree(step, ctx);
    case "sysctl":
      return inspectSysctl(step);
    case "sshd-reload":
      return inspectSshd(step, ctx);
    case "timer-enable":
      return inspectTimer(step, ctx);
    case "absent":
      return inspectAbsent(step);
  }
}

export function describe(step: Step, ctx: Ctx): string {
  switch (step.kind) {
    case "dir":
    case "file":
    case "log":
      return `${step.kind} ${step.path} ${step.owner === "user" ? ctx.user : "root"}:${step.group === "group" ? ctx.group : "root"} ${modeStr(step.mode)}`;
    case "account":
      return `account ${step.user} (group ${step.group}, home ${step.path}, shell ${step.shell})`;
    case "sysctl":
      return `sysctl ${step.path} = ${step.value}`;
    case "timer-enable":
      return `timer-enable ${step.unit}`;
    case "absent":
      return `absent ${step.path}`;
    default:
      return `${step.kind} ${step.path}`;
  }
}

/** Inspect each step and, unless dry, apply its changes before inspecting the next. */
export function runPlan(steps: Step[], ctx: Ctx, opts: { dry: boolean; out: (line: string) => void }): { changes: number; warnings: number } {
  let changes = 0;
  let warnings = 0;
  for (const step of steps) {
    const found = inspect(step, ctx);
    const real = found.filter((c) => !c.warn);
    opts.out(`[${real.length ? "+" : "="}] ${describe(step, ctx)}  (${step.why})`);
    for (const c of found) {
      opts.out(`    ${c.warn ? "!" : "+"} ${c.what}`);
      if (c.warn) {
        warnings++;
        continue;
      }
      changes++;
      if (opts.dry) continue;
      if (!c.do) throw new VbError("IO", `cannot fix by itself: ${c.what}; fix: ${c.fix}`);
      c.do();
    }
    if (real.length) ctx.changed.add(step.path);
    if (step.kind === "account" && real.length) ctx.forget();
  }
  return { changes, warnings };
}
