// `validate-backup hourly --config F [--keep-full N]` (root, from the systemd unit): seal, prune and
// audit --record-head, in that order, each run even when one before it failed, and the run exits
// with the worst status. A oneshot unit's ExecStart lines stop at the first failure: a prune that
// failed used to keep the audit log's head from being recorded, hour after hour.
//
// Each step is a child process of this same program (node, its flags, the bundle), so a step that
// crashes or leaks cannot take the next one with it.
// After them, their exit statuses are recorded (state/monitor/hourly.json) and notify and metrics
// report on them (src/monitor/).
import { spawnSync } from "node:child_process";
import { parseArgs, nowFrom, requireRoot, main, EXIT } from "./context.js";
import { usageFault } from "../usage.js";
import { monitorSteps, recordRun } from "../monitor/record.js";

/**
 * The steps, in order: settle the uploads, drop old chains, then pin the log's head (after both
 * logged). `name`: what the step's result is recorded as (monitor/record.ts).
 */
export function hourlySteps(config: string, keepFull: string | undefined, now: string | undefined): { name: string; argv: string[] }[] {
  return [
    { name: "seal", argv: ["seal", "--config", config] },
    // Without --keep-full, prune keeps the config's housekeeping.keepFull.
    { name: "prune", argv: ["prune", "--config", config, ...(keepFull === undefined ? [] : ["--keep-full", keepFull]), ...(now === undefined ? [] : ["--now", now])] },
    { name: "record-head", argv: ["audit", "--record-head", "--config", config] },
  ];
}

/** prune's warning (nothing arrived for too long) is worse than success, better than any failure. */
function rank(code: number): number {
  return code === EXIT.ok ? 0 : code === EXIT.warning ? 1 : 2;
}

export async function hourlyMain(args: string[]): Promise<number> {
  return main("hourly", () => {
    // Hidden, for tests: --now, a clock (nowFrom in context.ts) handed on to prune and to the
    // monitoring steps; --metrics-output, metrics written elsewhere than the node exporter's file.
    const o = parseArgs(args, { "--config": "value", "--keep-full": "value", "--now": "value", "--metrics-output": "value" }, "hourly");
    const config = o.get("--config");
    const keepFull = o.get("--keep-full");
    if (!config) throw usageFault("hourly", "--config is required");
    requireRoot("hourly");
    const now = o.get("--now");
    const at = nowFrom(o) ?? Date.now();
    let worst: number = EXIT.ok;
    const failed: string[] = [];
    const results: { step: string; code: number }[] = [];
    const runStep = (step: string[]) => {
      const r = spawnSync(process.execPath, [...process.execArgv, "--", process.argv[1]!, ...step], { stdio: "inherit", env: process.env });
      const code = r.status ?? EXIT.failed; // killed by a signal, or not started at all
      if (rank(code) === 2) failed.push(`${step[0]} (exit ${r.status ?? r.signal ?? r.error?.message})`);
      if (rank(code) > rank(worst)) worst = code;
      return code;
    };
    for (const step of hourlySteps(config, keepFull, now)) results.push({ step: step.name, code: runStep(step.argv) });
    try {
      recordRun(config, results, at);
    } catch (e) {
      failed.push(`recording the results (${(e as Error).message})`);
      worst = EXIT.failed;
    }
    for (const step of monitorSteps(config, now, o.get("--metrics-output"))) runStep(step);
    // The steps said what went wrong on stderr; this line says that the later ones still ran.
    if (failed.length) process.stderr.write(`validate-backup hourly: failed: ${failed.join(", ")}; every step was run\n`);
    return worst;
  });
}
