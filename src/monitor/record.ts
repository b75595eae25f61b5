// What the hourly run adds after its steps: their exit statuses kept in state/monitor/hourly.json
// (status and notify read a step that failed before it could write its audit line from there), then
// notify and metrics, which report on them.
import path from "node:path";
import { loadConfig } from "../config/load.js";
import { HOURLY_RECORD, type HourlyRecord } from "./facts.js";
import { withMonitorDir, writeRecord } from "./store.js";

/**
 * The monitoring steps after the housekeeping ones: tell whoever housekeeping.notify names, then
 * write every key's metrics (the config's directory holds the host's keys). `metricsOutput`: the
 * hidden --metrics-output of hourly, so that a test run never writes the host's real metrics file.
 */
export function monitorSteps(config: string, now?: string, metricsOutput?: string): string[][] {
  const clock = now === undefined ? [] : ["--now", now];
  return [
    ["notify", "--config", config, ...clock],
    ["metrics", "--config-dir", path.dirname(config), ...clock, ...(metricsOutput === undefined ? [] : ["--output", metricsOutput])],
  ];
}

export function recordRun(config: string, steps: HourlyRecord["steps"], at: number): void {
  const p = loadConfig(config);
  withMonitorDir(p.state, (dir) => writeRecord(dir, HOURLY_RECORD, { at: new Date(at).toISOString(), steps } satisfies HourlyRecord));
}
