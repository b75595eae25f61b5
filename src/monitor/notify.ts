// `validate-backup notify --config F` (root, a step of the hourly run): where no monitoring runs,
// housekeeping.notify (an argv: absolute program, no shell) is run with a message on stdin when a
// condition begins: nothing arrived for warnNoArrivalHours, a scheduled step failed, an anomaly of
// a kind was logged. Once per condition until it clears, not every hour: the conditions already
// told are kept in state/monitor/notify.json (root's, written atomically). When the command fails,
// the new conditions are not marked told, so the next run tries again.
import os from "node:os";
import { spawnSync } from "node:child_process";
import { usageFault } from "../usage.js";
import { parseArgs, nowFrom, requireRoot, main, open, EXIT } from "../housekeeping/context.js";
import { cleanString, say } from "../audit/sanitize.js";
import { gather, saveFacts, NOT_FAILED, STEPS, type KeyFacts } from "./facts.js";
import { openMonitorDir, readRecord, writeRecord } from "./store.js";
import { duration } from "../audit/units.js";
import { closeQuietly } from "../fsat.js";

export const NOTIFY_RECORD = "notify.json";
const NOTIFY_TIMEOUT_MS = 60_000;
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };

/** Conditions told and not yet cleared: name -> when they were told. */
interface NotifyRecord {
  told: Record<string, string>;
}

/** Every condition of the key now: name -> what a person reads about it. */
export function conditions(f: KeyFacts, now: number): Map<string, string> {
  const out = new Map<string, string>();
  if (f.stale)
    out.set(
      "stale",
      f.lastArrival === undefined
        ? "nothing has ever arrived"
        : `nothing arrived for ${duration(now - f.lastArrival, "short")} (the last file at ${new Date(f.lastArrival).toISOString()}; housekeeping.warnNoArrivalHours is ${f.warnNoArrivalHours})`,
    );
  for (const s of STEPS) {
    const r = f.steps[s];
    if (r && !r.ok) out.set(`failed ${s}`, `${s} failed at ${r.at}: ${r.detail}`);
  }
  for (const s of f.hourly?.steps ?? []) if (!NOT_FAILED.has(s.code) && !out.has(`failed ${s.step}`)) out.set(`failed ${s.step}`, `${s.step} failed in the hourly run at ${f.hourly!.at} (exit ${s.code})`);
  // Facts that could not be read leave the key unjudged: as loud as a failure, never silence.
  if (f.unread?.length) out.set("cannot read", `the key cannot be judged: ${f.unread.join("; ")}`);
  for (const [kind, a] of f.anomalies) out.set(`anomaly ${kind}`, `${a.count} anomal${a.count > 1 ? "ies" : "y"} '${kind}' in the last 24 hours, the last at ${a.last.time}: ${a.last.detail}`);
  return out;
}

function message(label: string, fresh: string[], now: Map<string, string>): string {
  const older = [...now.keys()].filter((c) => !fresh.includes(c));
  return [
    `validate-backup on ${os.hostname()}: the key '${label}' needs attention.`,
    "",
    ...fresh.map((c) => `- ${cleanString(now.get(c)!, 2000)}`),
    ...(older.length ? ["", "Still as told before:", ...older.map((c) => `- ${cleanString(now.get(c)!, 2000)}`)] : []),
    "",
    "You are told once per condition, until it clears. `validate-backup status` shows every key; `validate-backup audit` the log.",
    "",
  ].join("\n");
}

function run(argv: string[], text: string): string | undefined {
  const r = spawnSync(argv[0]!, argv.slice(1), { input: text, env: ENV, stdio: ["pipe", "ignore", "pipe"], timeout: NOTIFY_TIMEOUT_MS, shell: false, encoding: "utf8" });
  if (r.error) return r.error.message;
  if (r.status !== 0) return `exit ${r.status ?? r.signal}${r.stderr ? `: ${cleanString(r.stderr.trim(), 300)}` : ""}`;
  return undefined;
}

export async function notifyMain(args: string[]): Promise<number> {
  return main("notify", async () => {
    const o = parseArgs(args, { "--config": "value", "--now": "value" }, "notify");
    const config = o.get("--config");
    if (!config) throw usageFault("notify", "--config is required");
    const now = nowFrom(o) ?? Date.now();
    requireRoot("notify", "it keeps root's record of what was told in the state directory");
    const h = open(config, "notify");
    try {
      const [f] = await gather([config], now);
      const dir = openMonitorDir(h.stateFd, true)!;
      try {
        // Saved whoever is told: the metrics step after this one reuses them instead of gathering again.
        saveFacts(dir, f!, now);
        const argv = h.policy.housekeeping.notify;
        if (!argv) say("validate-backup notify: no housekeeping.notify in the config: nobody to tell");
        else {
          const current = conditions(f!, now);
          const told = readRecord<NotifyRecord>(dir, NOTIFY_RECORD)?.told ?? {};
          // Cleared conditions are forgotten: when one comes back, it is told again.
          const kept = Object.fromEntries(Object.entries(told).filter(([c]) => current.has(c)));
          const fresh = [...current.keys()].filter((c) => !Object.hasOwn(kept, c));
          let failure: string | undefined;
          if (fresh.length) {
            failure = run(argv, message(h.policy.label, fresh, current));
            h.audit.event("notify", { conditions: fresh, ok: !failure, ...(failure ? { reason: failure } : {}) });
            if (!failure) for (const c of fresh) kept[c] = new Date(now).toISOString();
          }
          writeRecord(dir, NOTIFY_RECORD, { told: kept } satisfies NotifyRecord);
          if (failure) {
            say(`validate-backup notify: ${argv[0]} failed (${failure}); the next run tries again`, "err");
            return EXIT.failed;
          }
          say(fresh.length ? `validate-backup notify: told: ${fresh.join(", ")}` : `validate-backup notify: nothing new (${current.size} condition(s) already told)`);
        }
        // Nobody to tell is no judgement of the key: a key that could not be read fails the step all the same.
        if (f!.unread?.length) {
          say(`validate-backup notify: the key could not be judged: ${f!.unread.join("; ")}`, "err");
          return EXIT.failed;
        }
        return EXIT.ok;
      } finally {
        closeQuietly(dir);
      }
    } finally {
      h.close();
    }
  });
}
