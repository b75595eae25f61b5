// validate-backup remove-key --label L (also install-remote --remove): take one key out of its
// backup account. Its authorized_keys line(s), its config, its housekeeping schedule (cron file,
// systemd units and timers, the weekly verify --stored pair) and, when no key line is left in the
// account, the sshd drop-in. The backups, the state and the audit log stay: they are the record,
// and the run says where they are. The same steps, the same inspection and the same safety as
// install-remote (plan.ts, apply.ts): every path walked without following links, each change
// printed, nothing changed with --dry-run.
import path from "node:path";
import crypto from "node:crypto";
import { parseArgs } from "node:util";
import { VbError } from "../errors.js";
import { parseConfig } from "../config/load.js";
import { openAudit, ROOT_CLIENT, type Audit } from "../audit/log.js";
import { open as openHousekeeping } from "../housekeeping/context.js";
import { absentUnits, type Step } from "./plan.js";
import { runPlan, inspect, kindOf } from "./apply.js";
import { Ctx } from "./change.js";
import { parseKeyLine, gateOf } from "./keys.js";
import { lookupUser, lookupGroup, allUsers, isRoot, type Account } from "./system.js";
import { canonical, readText, lstatPath } from "./fsops.js";
import * as sshd from "./sshd.js";
import { scheduleName, verifyName, scheduleMark, scheduleChoice, SCHEDULE_DIRS, type ScheduleKind } from "./schedule.js";
import { absolute, checkLabel, CONFIG_DIR } from "./options.js";
import { usageText, helpText } from "../usage.js";

const OPTIONS = {
  label: { type: "string" },
  user: { type: "string" },
  "dry-run": { type: "boolean", default: false },
  "config-dir": { type: "string", default: CONFIG_DIR },
  "sshd-config": { type: "string", default: sshd.DEFAULT_SSHD_CONFIG },
  schedule: { type: "string", default: "auto" },
  "schedule-dir": { type: "string" },
} as const;

function bad(message: string): never {
  throw new VbError("BAD_REQUEST", message);
}

interface Options {
  label: string;
  user?: string;
  dry: boolean;
  config: string;
  sshdConfig: string;
  /** Where the key's schedule files may be, and of which kind: every place install-remote writes them unless told. */
  schedules: { kind: ScheduleKind; dir: string }[];
}

function parse(args: string[]): Options {
  let v;
  try {
    v = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    bad(`${(e as Error).message}\n${usageText("remove-key")}`);
  }
  if (!v.label) bad(`--label is required\n${usageText("remove-key")}`);
  checkLabel(v.label);
  // auto: every place install-remote may have written to, not only the one it would pick now.
  const choice = scheduleChoice(v.schedule);
  const kinds = choice === "none" ? [] : choice === "auto" ? (Object.keys(SCHEDULE_DIRS) as ScheduleKind[]) : [choice];
  const dir = v["schedule-dir"] === undefined ? undefined : absolute("schedule-dir", v["schedule-dir"]);
  return {
    label: v.label,
    user: v.user,
    dry: v["dry-run"],
    config: path.join(absolute("config-dir", v["config-dir"]), `${v.label}.json`),
    sshdConfig: absolute("sshd-config", v["sshd-config"]),
    schedules: kinds.map((kind) => ({ kind, dir: dir ?? SCHEDULE_DIRS[kind] })),
  };
}

interface KeyLines {
  account: Account;
  akPath: string;
  /** authorized_keys without the key's lines. */
  rest: string;
  removed: number;
  /** The removed keys, for a person: type, the blob's end, comment. */
  gone: string[];
  /** Key lines (of any kind) left in the account. */
  left: number;
}

/** An authorized_keys remove-key could not read: a line naming the config may be in it. */
interface Unjudged {
  account: Account;
  akPath: string;
  /** Why, after the path: "is a symbolic link, …". */
  why: string;
}

const isUnjudged = (k: KeyLines | Unjudged | null): k is Unjudged => k !== null && "why" in k;
const isLines = (k: KeyLines | Unjudged | null): k is KeyLines => k !== null && !("why" in k);

/**
 * The account's authorized_keys split into this config's gate lines and the rest; null when none
 * names it (or there is no such file). `installed`: only a root-owned file counts (install-remote's),
 * so that a line someone put in an authorized_keys of their own never makes root rewrite that file.
 * A file that cannot be read (a link, a FIFO, a directory, too big, a link on the way) is Unjudged,
 * never taken for one without the line: the key would be said gone while a line may be left.
 */
function linesOf(account: Account, config: string, installed = false): KeyLines | Unjudged | null {
  const akPath = path.join(canonical(account.home), ".ssh", "authorized_keys");
  let text: string | null;
  try {
    const st = lstatPath(akPath);
    if (st === null) return null;
    if (!st.isFile()) return { account, akPath, why: `is a ${kindOf(st)}, which root never reads here` };
    if (installed && st.uid !== 0) return null;
    text = readText(akPath);
  } catch (e) {
    return { account, akPath, why: `could not be read (${(e as Error).message.replace(`${akPath}: `, "")})` };
  }
  if (text === null) return null;
  const keep: string[] = [];
  const gone: string[] = [];
  let left = 0;
  for (const raw of text.split("\n")) {
    const k = parseKeyLine(raw);
    const gate = k && !("bad" in k) ? gateOf(k) : null;
    if (k && !("bad" in k) && gate && (gate.config === config || canonical(gate.config) === config)) {
      gone.push(`${k.type} …${k.blob.slice(-12)} ${k.comment}`.trimEnd());
      continue;
    }
    if (k) left++;
    keep.push(raw);
  }
  if (!gone.length) return null;
  while (keep.length && keep[keep.length - 1] === "") keep.pop();
  return { account, akPath, rest: keep.length ? keep.join("\n") + "\n" : "", removed: gone.length, gone, left };
}

/** The accounts whose authorized_keys are looked into without --user: those with a home of their own. */
function withHome(): Account[] {
  return allUsers().filter((a) => path.isAbsolute(a.home) && a.home !== "/");
}

/**
 * The account whose key lines name the config: --user's, else the one account found holding such a
 * line in a root-owned file; and the authorized_keys files that could not be judged (--user's, else any).
 */
function findLines(o: Options): { lines: KeyLines | null; unjudged: Unjudged[] } {
  if (o.user !== undefined) {
    const account = lookupUser(o.user) ?? bad(`--user ${o.user.slice(0, 40)}: no such account`);
    const k = linesOf(account, o.config);
    return isUnjudged(k) ? { lines: null, unjudged: [k] } : { lines: k, unjudged: [] };
  }
  const all = withHome().map((a) => linesOf(a, o.config, true));
  const found = all.filter(isLines);
  if (found.length > 1) bad(`key lines naming ${o.config} are in the accounts ${found.map((k) => k.account.name).join(", ")}: say which with --user`);
  return { lines: found[0] ?? null, unjudged: all.filter(isUnjudged) };
}

/**
 * What may be left after the plan, looked at again. Key lines naming the config in an authorized_keys
 * its account owns: without --user root never rewrites such a file (its owner may have put anything
 * there), but the key is not removed while a line is left, and remove-key must not say it is. And
 * the files it could not judge, which may hold such a line.
 */
function leftOver(o: Options): { stray: KeyLines[]; unjudged: Unjudged[] } {
  const accounts = o.user !== undefined ? [lookupUser(o.user)].filter((a): a is Account => a !== null && a !== undefined) : withHome();
  const all = accounts.map((a) => linesOf(a, o.config));
  return {
    stray: o.user !== undefined ? [] : all.filter(isLines).filter((k) => lstatPath(k.akPath)?.uid !== 0),
    unjudged: all.filter(isUnjudged),
  };
}

/** What a person reads of a file not judged: which, why, what it leaves open, what to do. */
function notJudged(o: Options, u: Unjudged): string {
  const only = o.user === undefined ? `; or name the key's account with --user, and only its file is judged` : "";
  return `${u.akPath} ${u.why}: a key line naming ${o.config} may be in it; make it a regular file (or take such a line out by hand), then run remove-key again${only}`;
}

/** What the config says of the key's places, or why it cannot say. */
function placesOf(config: string): { label: string; root: string; state: string; audit: string } | string | null {
  let text: string | null;
  try {
    text = readText(config);
  } catch (e) {
    return (e as Error).message;
  }
  if (text === null) return null;
  try {
    const p = parseConfig(text, config);
    return { label: p.label, root: p.root, state: p.state, audit: p.audit.file };
  } catch (e) {
    return (e as Error).message;
  }
}

function steps(o: Options, lines: KeyLines | null): Step[] {
  const out: Step[] = [];
  const why = `[${o.label}]`;
  if (lines)
    out.push({ kind: "file", path: lines.akPath, owner: "root", group: "root", mode: 0o644, content: lines.rest, why: `${why} the key's line(s) out of authorized_keys (${lines.removed})` });
  out.push({ kind: "absent", path: o.config, why: `${why} the key's config` });
  const name = scheduleName(o.label);
  for (const { kind, dir } of o.schedules) {
    if (kind === "cron") out.push({ kind: "absent", path: path.join(dir, name), mark: scheduleMark(o.label), why: `${why} its housekeeping from cron` });
    else out.push(...absentUnits(dir, name, o.label, `${why} its hourly housekeeping unit`), ...absentUnits(dir, verifyName(o.label), o.label, `${why} its weekly verify --stored unit`));
  }
  // The drop-in serves every key of the account: it goes with the last key line, of any kind.
  if (lines && lines.left === 0) {
    const dropin = sshd.dropinPath(o.sshdConfig, lines.account.name);
    out.push({ kind: "absent", path: dropin, mark: sshd.dropinMark(lines.account.name), why: `the sshd drop-in of ${lines.account.name}: no key is left in the account` });
    out.push({ kind: "sshd-reload", path: o.sshdConfig, dropin, why: "sshd -t, then reload" });
  }
  return out;
}

/**
 * The removal, in the key's own audit log, before anything changes: the log outlives the key and is
 * where its history is read. Through housekeeping's opening (the lock in the state directory, by
 * descriptor); where root or state are gone, the line is still appended, without the lock.
 */
function recordRemoval(places: { label: string; audit: string } | null, config: string, fields: Record<string, unknown>, out: (l: string) => void, event = "key-removed"): void {
  if (!places) return;
  let audit: Audit | undefined;
  let close = () => {};
  try {
    const h = openHousekeeping(config, "remove-key");
    audit = h.audit;
    close = h.close;
  } catch {
    audit = openAudit(places.audit, undefined, { label: places.label, sid: `remove-key-${process.pid}-${crypto.randomBytes(3).toString("hex")}`, client: ROOT_CLIENT }, false);
  }
  try {
    audit.event(event, fields);
    if (!audit.ok) out(`  ! the audit log ${places.audit} could not be written: the removal goes on (taking access away is never refused)`);
  } finally {
    close();
  }
}

export async function removeMain(args: string[]): Promise<number> {
  const out = (line: string) => process.stdout.write(line + "\n");
  // install-remote --remove --help reaches here (remove-key --help is answered by cli.ts).
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    out(helpText("remove-key"));
    return 0;
  }
  let o: Options;
  let lines: KeyLines | null;
  let unjudged: Unjudged[];
  let plan: Step[];
  let ctx: Ctx;
  let places: ReturnType<typeof placesOf>;
  try {
    o = parse(args);
    if (!o.dry && !isRoot()) bad("remove-key must run as root (or with --dry-run, which changes nothing)");
    ({ lines, unjudged } = findLines(o));
    places = placesOf(o.config);
    plan = steps(o, lines);
    const user = lines?.account.name ?? "root";
    ctx = new Ctx(user, lines ? (lookupGroup(lines.account.gid)?.name ?? String(lines.account.gid)) : "root", undefined);
    const pending = plan.flatMap((s) => inspect(s, ctx)).filter((c) => !c.warn);
    // Nothing remove-key can see is left, but a file it cannot read may hold a line: not "nothing to remove".
    if (!pending.length && unjudged.length) {
      for (const u of unjudged) process.stderr.write(`validate-backup remove-key: NOT JUDGED: ${notJudged(o, u)}\n`);
      return 4;
    }
    if (!pending.length)
      bad(
        `no key '${o.label}' is installed here: no ${o.config}, no key line naming it${o.user ? ` in ${o.user}'s authorized_keys` : ""}, ` +
          `no schedule file of it in ${[...new Set(o.schedules.map((x) => x.dir))].join(" or ") || "(--schedule none)"}: nothing to remove`,
      );
  } catch (e) {
    process.stderr.write(`validate-backup remove-key: ${(e as Error).message}\n`);
    return e instanceof VbError && e.code === "BAD_REQUEST" ? 2 : 4;
  }
  const unseen = unjudged.length ? ` (${unjudged.length} authorized_keys could not be judged: see the end)` : "";
  out(`${o.dry ? "Plan (dry run: nothing is changed) to remove" : "Removing"} the key '${o.label}' (${o.config})${lines ? ` from the account ${lines.account.name}` : o.user ? `: no key line of ${o.user} names it${unseen}` : `: no key line in a root-owned authorized_keys names it${unseen}`}`);
  const known = typeof places === "object" && places !== null ? places : null;
  for (const k of lines?.gone ?? []) out(`the key line: ${k}`);
  if (!o.dry) recordRemoval(known, o.config, { config: o.config, account: lines?.account.name ?? null, keyLines: lines?.removed ?? 0 }, out);
  let result: { changes: number; warnings: number };
  // The key-removed line above comes first (the key's lines go first, and the log must have said
  // so); a removal that then stops short says so too, or the log would claim more than was done.
  const unfinished = (left: string[]) => recordRemoval(known, o.config, { config: o.config, left: left.slice(0, 20), more: Math.max(0, left.length - 20) }, () => {}, "key-removal-unfinished");
  try {
    result = runPlan(plan, ctx, { dry: o.dry, out });
  } catch (e) {
    out(`remove-key: ${(e as Error).message}`);
    out("what was done is above; run remove-key again to finish");
    if (!o.dry) unfinished([(e as Error).message]);
    return 4;
  }
  out(`${result.changes} change(s)${o.dry ? " planned" : " made"}, ${result.warnings} warning(s)`);
  // What remove-key never touches, and where it is.
  if (known) {
    out(`${o.dry ? "Would stay" : "Stays"}: the backups in ${known.root} and the state in ${known.state} (nothing seals or prunes them any more),`);
    out(`  and the audit log ${known.audit} (append-only; \`validate-backup audit --file ${known.audit}\` reads it).`);
    out(`  When they are no longer needed: chattr -a ${known.audit} && rm ${known.audit}; rm -r ${known.root} ${known.state}`);
  } else out(`The config ${places === null ? "was not there" : `could not be read (${places})`}: its backups and audit log stay wherever it put them.`);
  if (lines && lines.left === 0) out(`The account ${lines.account.name} has no key left; it stays (its group owns the backups): userdel ${lines.account.name} once they are gone.`);
  else if (lines) out(`The account ${lines.account.name} keeps ${lines.left} other key line(s), and its sshd drop-in if it has one.`);
  const after = leftOver(o);
  const stray = after.stray.map((k) => `${k.akPath}: ${k.removed} key line(s) naming ${o.config}, in a file ${k.account.name} owns (rewritten only with --user ${k.account.name})`);
  const notRead = after.unjudged.map((u) => `NOT JUDGED: ${notJudged(o, u)}`);
  if (o.dry) {
    for (const w of stray) out(`WOULD NOT BE REMOVED: ${w}`);
    for (const w of notRead) out(w);
    return notRead.length ? 4 : 0;
  }
  // Judged again: 0 only when nothing of the key is left, and every file that may hold it was read.
  const left = plan.filter((s) => s.kind !== "sshd-reload").flatMap((s) => inspect(s, ctx).filter((c) => !c.warn));
  for (const c of left) out(`NOT REMOVED: ${c.what}`);
  for (const w of stray) out(`NOT REMOVED: ${w}`);
  for (const w of notRead) out(w);
  const short = [...left.map((c) => c.what), ...stray, ...notRead];
  if (short.length) unfinished(short);
  return short.length ? 4 : 0;
}
