// `validate-backup metrics [--config F]… [--config-dir DIR] [--output FILE]` (root): every key's
// facts (facts.ts) as a Prometheus textfile-collector file. The schedule runs it after each hourly
// run; where the default collector directory does not exist (no node exporter here) and no --output
// was given, it writes nothing and says so.
//
// The 24-hour figures are gauges over a sliding window, not counters: a _total name would make
// Prometheus' rate() read their fall as a counter reset.
import fs from "node:fs";
import path from "node:path";
import { requireRoot, main, EXIT } from "../housekeeping/context.js";
import { say } from "../audit/sanitize.js";
import { parseKeyArgs } from "./keys.js";
import { gather, anomalyCount, configRead, judged, STEPS, type KeyFacts } from "./facts.js";
import { render, writeAtomically, type Family } from "./prom.js";

export const DEFAULT_OUTPUT = "/var/lib/prometheus/node-exporter/validate-backup.prom";

type Metric = [name: string, help: string, (f: KeyFacts) => number | undefined | [Record<string, string>, number][]];

// Policy as data: each metric, what it means, and where its value comes from.
const METRICS: Metric[] = [
  ["validate_backup_last_arrival_timestamp_seconds", "When the last file of the key arrived (our clock), seconds since the epoch.", (f) => (f.lastArrival === undefined ? undefined : f.lastArrival / 1000)],
  ["validate_backup_no_arrival_warning_seconds", "housekeeping.warnNoArrivalHours of the key, in seconds.", (f) => (f.publishes ? f.warnNoArrivalHours * 3600 : undefined)],
  ["validate_backup_stale", "1 when nothing arrived for longer than housekeeping.warnNoArrivalHours (never for a read-only key).", (f) => Number(f.stale)],
  ["validate_backup_stored_bytes", "Apparent bytes of the regular files in the key's root.", (f) => f.stored?.bytes],
  ["validate_backup_stored_files", "Regular files in the key's root.", (f) => f.stored?.files],
  ["validate_backup_quota_used_bytes", "Bytes the quota counts: root and state, less uploads in flight.", (f) => f.stored?.quotaUsed],
  ["validate_backup_quota_bytes", "limits.maxStoredBytes of the key (absent: no quota).", (f) => f.quotaBytes],
  ["validate_backup_last_run_timestamp_seconds", "When seal, prune or verify --stored last ran for the key, seconds since the epoch.", (f) => STEPS.flatMap((s) => (f.steps[s] ? [[{ step: s }, Date.parse(f.steps[s]!.at) / 1000] as [Record<string, string>, number]] : []))],
  ["validate_backup_last_run_success", "1 when the last run of the step went well, 0 when it failed.", (f) => STEPS.flatMap((s) => (f.steps[s] ? [[{ step: s }, Number(f.steps[s]!.ok)] as [Record<string, string>, number]] : []))],
  ["validate_backup_refusals_last_24h", "Refusals the audit log records for the key in the last 24 hours.", (f) => f.refusals],
  ["validate_backup_anomalies_last_24h", "Anomalies the audit review finds for the key in the last 24 hours.", (f) => anomalyCount(f)],
  ["validate_backup_failing", "1 when the key's config, a step of its housekeeping or its records failed.", (f) => Number(f.failing.length > 0)],
];

export function families(keys: KeyFacts[], now: number): Family[] {
  const out: Family[] = [
    { name: "validate_backup_config_ok", help: "1 for each key whose config could be read, 0 for one that could not.", type: "gauge", samples: keys.map((f) => ({ labels: { label: f.label, config: f.config }, value: Number(configRead(f)) })) },
  ];
  const known = keys.filter(configRead);
  for (const [name, help, get] of METRICS) {
    const samples: Family["samples"] = [];
    for (const f of known) {
      const v = get(f);
      if (Array.isArray(v)) samples.push(...v.map(([labels, value]) => ({ labels: { label: f.label, ...labels }, value })));
      else if (v !== undefined) samples.push({ labels: { label: f.label }, value: v });
    }
    out.push({ name, help, type: "gauge", samples });
  }
  out.push({ name: "validate_backup_metrics_timestamp_seconds", help: "When this file was written, seconds since the epoch.", type: "gauge", samples: [{ labels: {}, value: now / 1000 }] });
  return out;
}

export async function metricsMain(args: string[]): Promise<number> {
  return main("metrics", async () => {
    const k = parseKeyArgs(args, { "--output": "value" }, "metrics");
    requireRoot("metrics", "it reads every key's state directory and audit log");
    const given = k.options.get("--output");
    const output = given ?? DEFAULT_OUTPUT;
    if (given === undefined && !fs.existsSync(path.dirname(output))) {
      say(`validate-backup metrics: ${path.dirname(output)} does not exist (no node exporter textfile collector here): nothing written; --output FILE writes elsewhere`);
      return EXIT.ok;
    }
    // A key's facts as its own hourly run saved them (notify, just before), else gathered now.
    const keys = await gather(k.configs, k.now, true);
    writeAtomically(path.resolve(output), render(families(keys, k.now)));
    say(`validate-backup metrics: ${keys.length} key(s) written to ${output}`);
    // A key whose facts could not all be gathered was not judged: its failing gauge is in the
    // file, and the run fails too (a failed step of its housekeeping is a judged fact: no failure).
    const bad = keys.filter((f) => !judged(f));
    for (const f of bad)
      say(configRead(f) ? `validate-backup metrics: '${f.label}' (${f.config}): could not be judged: ${f.unread!.join("; ")}` : `validate-backup metrics: ${f.config}: ${f.error}`, "err");
    return bad.length ? EXIT.failed : EXIT.ok;
  });
}
