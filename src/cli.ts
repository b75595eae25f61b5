// Entry point. The subcommand table maps each word to a lazily loaded module, so an SSH session
// (the default, serve) loads nothing that only root's tools need.
import fs from "node:fs";
import path from "node:path";
import { TOP } from "./top.js";
import { USAGES, usageText, helpText, type Subcommand } from "./usage.js";

const MIN_NODE = 20;
const major = Number(process.versions.node.split(".")[0]);
if (major < MIN_NODE) {
  process.stderr.write(`validate-backup: Node.js >= ${MIN_NODE} is required (this is ${process.version})\n`);
  process.exit(2);
}

type Run = (args: string[]) => Promise<number>;

// The words and what each loads; their usage lives in usage.ts (one table for --help and errors).
const SUBCOMMANDS: Record<Subcommand, () => Promise<Run>> = {
  serve: async () => serveMain,
  verify: async () => async (args) => (args.includes("--stored") ? (await import("./housekeeping/stored.js")).storedMain(args) : (await import("./pgp/verify.js")).verifyMain(args)),
  audit: async () => (await import("./audit/command.js")).auditMain,
  demo: async () => (await import("./demo.js")).demo,
  // --remove is remove-key under the name an admin may look for first.
  "install-remote": async () => async (args) =>
    args.includes("--remove") ? (await import("./remote/remove.js")).removeMain(args.filter((a) => a !== "--remove")) : (await import("./remote/install.js")).installMain(args),
  "remove-key": async () => (await import("./remote/remove.js")).removeMain,
  check: async () => (await import("./remote/check.js")).checkMain,
  seal: async () => (await import("./housekeeping/seal.js")).sealMain,
  hourly: async () => (await import("./housekeeping/hourly.js")).hourlyMain,
  status: async () => (await import("./monitor/status.js")).statusMain,
  metrics: async () => (await import("./monitor/metrics.js")).metricsMain,
  notify: async () => (await import("./monitor/notify.js")).notifyMain,
  prune: async () => (await import("./housekeeping/prune.js")).pruneMain,
};

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(TOP, "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

function help(): string {
  const lines = Object.values(USAGES).flatMap((u) => [...u.synopsis.map((syn) => `  validate-backup ${syn}`), `      ${u.about}`]);
  return [
    "validate-backup: an SSH forced command that lets a backup key add files and nothing else.",
    "",
    "Usage:",
    ...lines,
    "  validate-backup --help | --version   (SUBCOMMAND --help: its options)",
    "",
    "Serve mode reads SSH_ORIGINAL_COMMAND and answers only append-only (or read-only) SFTP, scp and",
    "rsync, confined to the config's root. See README.md.",
  ].join("\n");
}

async function serveMain(args: string[]): Promise<number> {
  if (args.length !== 2 || args[0] !== "--config") {
    process.stderr.write(`validate-backup serve: expected --config FILE (got: ${args.join(" ").slice(0, 200)})\n${usageText("serve")}\n`);
    return 2;
  }
  const { serve } = await import("./serve.js");
  return serve(args[1]!, process.env);
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--help" || first === "-h" || first === "help") {
    process.stdout.write(help() + "\n");
    return 0;
  }
  if (first === "--version") {
    process.stdout.write(`validate-backup ${version()}\n`);
    return 0;
  }
  if (first === "--config") return serveMain(argv);
  const sub = first !== undefined && Object.hasOwn(SUBCOMMANDS, first) ? (first as Subcommand) : undefined;
  if (!sub) {
    process.stderr.write(`validate-backup: unknown command '${String(first).slice(0, 64)}' (see --help)\n`);
    return 2;
  }
  // Every subcommand's usage in one style, from the table, without loading the subcommand.
  if (rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h")) {
    process.stdout.write(helpText(sub) + "\n");
    return 0;
  }
  return (await SUBCOMMANDS[sub]())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`validate-backup: ${(e as Error)?.message ?? String(e)}\n`);
    process.exitCode = 4;
  },
);
