// The server side of legacy scp is started as `scp -t TARGET` (the client uploads: we are the
// sink) or `scp -f PATH…` (the client downloads: we are the source). Pure: words in, request out.
// Every other option of scp(1) concerns the client's own ssh (-S runs a program, -o and -F feed
// ssh options such as ProxyCommand, -3 relays through a third host) and is refused, never obeyed.
import { VbError } from "../errors.js";
import { Confiner } from "../vault/paths.js";

export interface ScpRequest {
  direction: "sink" | "source";
  recursive: boolean;
  /** -p: the client sends (or wants) T lines with the times. */
  preserve: boolean;
  /** -d: the target must be an existing directory (the client sends several files). */
  targetIsDir: boolean;
  verbose: boolean;
  /** sink: exactly one target; source: one or more paths, which may hold wildcards. */
  paths: string[];
}

type Flag = Exclude<keyof ScpRequest, "direction" | "paths">;

// Letter -> what it sets. getopt semantics: flags may be bundled (-rt), none takes an argument.
const OPTIONS: Record<string, { direction: ScpRequest["direction"] } | { flag: Flag }> = {
  t: { direction: "sink" },
  f: { direction: "source" },
  r: { flag: "recursive" },
  p: { flag: "preserve" },
  d: { flag: "targetIsDir" },
  v: { flag: "verbose" },
};

function deny(message: string): never {
  throw new VbError("NOT_ALLOWED", message);
}

/**
 * Refuse at the gate any path that names something outside the configured root (lexically: the
 * vault checks again, walking the real tree without following links, when the path is used).
 */
export function checkInsideRoot(paths: readonly string[], root: string): void {
  const confiner = new Confiner([root]);
  for (const p of paths) confiner.confine(p);
}

/** `root` is the configured backup root; every path must lie inside it. */
export function parseScpArgs(args: readonly string[], root: string): ScpRequest {
  const req: ScpRequest = { direction: "sink", recursive: false, preserve: false, targetIsDir: false, verbose: false, paths: [] };
  let direction: ScpRequest["direction"] | undefined;
  let i = 0;
  // Like scp's getopt: options end at '--' or at the first word that is not an option.
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-") || a === "-") break;
    for (const letter of a.slice(1)) {
      const o = Object.hasOwn(OPTIONS, letter) ? OPTIONS[letter] : undefined;
      if (!o) deny(`scp option '-${letter.slice(0, 8)}' is not allowed (only -t, -f, -r, -p, -d and -v)`);
      if ("flag" in o) req[o.flag] = true;
      else if (direction && direction !== o.direction) deny("scp: -t and -f cannot be combined");
      else direction = o.direction;
    }
  }
  if (!direction) deny("scp without -t or -f (the client side of scp is not served)");
  req.direction = direction;
  req.paths = args.slice(i);
  if (req.paths.length === 0) deny(`scp -${direction === "sink" ? "t" : "f"} needs a path`);
  if (direction === "sink" && req.paths.length !== 1)
    deny(`scp -t takes exactly one target, got ${req.paths.length} words (a name with spaces must be quoted)`);
  if (req.paths.some((p) => p === "")) deny("scp: empty path");
  checkInsideRoot(req.paths, root);
  return req;
}
