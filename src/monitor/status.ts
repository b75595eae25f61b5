// `validate-backup status [--config F]… [--config-dir DIR] [--json]` (root): one line per key on
// this host, stale keys first, then failing ones: the last arrival and how long ago, what is
// stored, the last housekeeping result, the last day's anomalies. Exit 1 when any key is stale or
// failing, so that the command can sit in any monitoring check as it is.
import { requireRoot, main, EXIT } from "../housekeeping/context.js";
import { columns } from "../audit/render.js";
import { say, visibleJson } from "../audit/sanitize.js";
import { showSize } from "../config/size.js";
import { ago as agoIn } from "../audit/units.js";
import { parseKeyArgs } from "./keys.js";
import { gather, anomalyCount, STEPS, type KeyFacts } from "./facts.js";

export const EXIT_ATTENTION = 1;

type State = "STALE" | "FAILING" | "OK";

function stateOf(f: KeyFacts): State {
  return f.stale ? "STALE" : f.failing.length ? "FAILING" : "OK";
}
const ORDER: Record<State, number> = { STALE: 0, FAILING: 1, OK: 2 };

/** Ages in the status column's short form: "40 min ago", "3.0 h ago", "2.5 days ago". */
const ago = (ms: number) => agoIn(ms, "short");

function arrival(f: KeyFacts, now: number): string {
  if (!f.publishes) return "read-only key";
  return f.lastArrival === undefined ? "never" : `${new Date(f.lastArrival).toISOString()} (${ago(now - f.lastArrival)})`;
}

function stored(f: KeyFacts): string {
  if (!f.stored) return "?";
  const quota = f.quotaBytes ? ` (${Math.round((100 * f.stored.quotaUsed) / f.quotaBytes)}% of ${showSize(f.quotaBytes)})` : "";
  return `${showSize(f.stored.bytes)} in ${f.stored.files} file${f.stored.files === 1 ? "" : "s"}${quota}`;
}

function housekeeping(f: KeyFacts, now: number): string {
  if (f.failing.length) return f.failing.join("; ");
  const runs = STEPS.flatMap((s) => (f.steps[s] ? [`${s} ${ago(now - Date.parse(f.steps[s]!.at))}`] : []));
  return runs.length ? `ok (${runs.join(", ")})` : f.publishes ? "never ran" : "ok";
}

function anomalies(f: KeyFacts): string {
  const n = anomalyCount(f);
  return n ? `${n}: ${[...f.anomalies].map(([k, v]) => `${k} ×${v.count}`).join(", ")}` : "none";
}

export function statusRows(keys: KeyFacts[], now: number): string[] {
  const sorted = [...keys].sort((a, b) => ORDER[stateOf(a)] - ORDER[stateOf(b)] || a.label.localeCompare(b.label));
  const rows = sorted.map((f) => [stateOf(f), f.label, arrival(f, now), stored(f), anomalies(f), housekeeping(f, now)]);
  return columns([["STATE", "KEY", "LAST ARRIVAL", "STORED", "ANOMALIES (24 H)", "HOUSEKEEPING"], ...rows]);
}

function asJson(f: KeyFacts, now: number): Record<string, unknown> {
  return {
    label: f.label,
    config: f.config,
    state: stateOf(f).toLowerCase(),
    access: f.publishes ? "append-only" : "read-only",
    lastArrival: f.lastArrival === undefined ? null : new Date(f.lastArrival).toISOString(),
    secondsSinceArrival: f.lastArrival === undefined ? null : Math.round((now - f.lastArrival) / 1000),
    warnNoArrivalHours: f.warnNoArrivalHours,
    stored: f.stored ?? null,
    quotaBytes: f.quotaBytes ?? null,
    steps: f.steps,
    hourly: f.hourly ?? null,
    failing: f.failing,
    refusals24h: f.refusals,
    anomalies24h: Object.fromEntries([...f.anomalies].map(([k, v]) => [k, { count: v.count, last: v.last }])),
  };
}

export async function statusMain(args: string[]): Promise<number> {
  return main("status", async () => {
    const k = parseKeyArgs(args, { "--json": "flag" }, "status");
    requireRoot("status", "it reads every key's state directory and audit log");
    const keys = await gather(k.configs, k.now);
    // What comes from the log or the disk reaches the terminal with its control characters made visible.
    if (k.options.has("--json")) process.stdout.write(visibleJson({ time: new Date(k.now).toISOString(), keys: keys.map((f) => asJson(f, k.now)) }, 2) + "\n");
    else say(statusRows(keys, k.now).join("\n"));
    return keys.some((f) => stateOf(f) !== "OK") ? EXIT_ATTENTION : EXIT.ok;
  });
}
