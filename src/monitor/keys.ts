// Which keys live on this host: the configs install-remote writes (one per key in its config
// directory, /etc/validate-backup by default), or those named with --config (repeatable). Options
// are checked against a table like every housekeeping command's; only --config may repeat.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";
import { parseArgs, nowFrom, type OptionKind } from "../housekeeping/context.js";
import { usageFault } from "../usage.js";
import { CONFIG_DIR } from "../remote/options.js";

export interface KeyArgs {
  configs: string[];
  options: Map<string, string>;
  /** The clock (the hidden, root-only --now of prune), else the real one. */
  now: number;
}

export function parseKeyArgs(args: string[], table: Record<string, OptionKind>, sub: "status" | "metrics"): KeyArgs {
  const configs: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--config") {
      const v = args[++i];
      if (v === undefined) throw usageFault(sub, "option '--config' needs a value");
      configs.push(v);
    } else if (a.startsWith("--config=")) configs.push(a.slice("--config=".length));
    else rest.push(a);
  }
  const options = parseArgs(rest, { ...table, "--config-dir": "value", "--now": "value" }, sub);
  for (const c of configs) if (!path.isAbsolute(c)) throw usageFault(sub, `--config ${c.slice(0, 200)}: must be an absolute path`);
  // --config alone names the keys; --config-dir (or neither) adds every *.json of that directory.
  const dir = options.get("--config-dir") ?? (configs.length ? undefined : CONFIG_DIR);
  if (dir !== undefined && !path.isAbsolute(dir)) throw usageFault(sub, `--config-dir ${dir.slice(0, 200)}: must be an absolute path`);
  if (dir !== undefined) configs.push(...configsIn(dir));
  const unique = [...new Set(configs)];
  if (!unique.length) throw new VbError("BAD_REQUEST", `no key: ${dir ?? "the --config files"} holds no *.json config (give --config F or --config-dir DIR)`);
  return { configs: unique, options, now: nowFrom(options) ?? Date.now() };
}

function configsIn(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new VbError("IO", `the config directory ${dir} cannot be read (${(e as NodeJS.ErrnoException).code})`);
  }
  return names
    .filter((n) => n.endsWith(".json"))
    .sort()
    .map((n) => path.join(dir, n));
}
