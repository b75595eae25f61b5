// Entry point. The subcommand table maps each word to a lazily loaded module, so an SSH session
// (the default, serve) loads nothing that only root's tools need.
import fs from "node:fs";
import path from "node:path";
import { TOP } from "./top.js";

const MIN_NODE = 20;
const major = Number(process.versions.node.split(".")[0]);
if (major < MIN_NODE) {
  process.stderr.write(`validate-backup: Node.js >= ${MIN_NODE} is required (this is ${process.version})\n`);
  process.exit(2);
}

type Run = (args: string[]) => Promise<number>;
interface Sub {
  summary: string;
  run: () => Promise<Run>;
}

const SUBCOMMANDS: Record<string, Sub> = {
  serve: {
    summary: "--config FILE   serve one SSH session (the default; SSH_ORIGINAL_COMMAND says what)",
    run: async () => serveMain,
  },
  verify: {
    summary: "DIR --signer CERT [--recipient CERT]… [--secret-key KEY [--passphrase-file F]]   check a backup copy: encrypted, signed, complete | --stored --config F   every stored file against the audit log's hashes (root)",
    run: async () => async (args) => (args.includes("--stored") ? (await import("./housekeeping/stored.js")).storedMain(args) : (await import("./pgp/verify.js")).verifyMain(args)),
  },
  audit: {
    summary: "[--file LOG | --config F] [--since T] [--denied] [--json] | --verify | --record-head   review the audit log (root)",
    run: async () => (await import("./audit/review.js")).auditMain,
  },
  demo: {
    summary: "[--keep]   a local demo: a backup added through the real sftp client, a delete and an overwrite refused",
    run: async () => (await import("./demo.js")).demo,
  },
  "install-remote": {
    summary: "--user NAME --root DIR --key PUBKEY_FILE [--from P] [--access M] [--label L] [--keep-full N] [--retention-days N] [--schedule S] [--sshd-dropin] [--dry-run] | --remove --label L …   (root)",
    // --remove is remove-key under the name an admin may look for first.
    run: async () => async (args) =>
      args.includes("--remove") ? (await import("./remote/remove.js")).removeMain(args.filter((a) => a !== "--remove")) : (await import("./remote/install.js")).installMain(args),
  },
  "remove-key": {
    summary: "--label L [--user NAME] [--config-dir DIR] [--schedule S] [--schedule-dir DIR] [--sshd-config FILE] [--dry-run]   take a key out: its key line, config, schedule, and the sshd drop-in with the last key; backups and audit log stay (root)",
    run: async () => (await import("./remote/remove.js")).removeMain,
  },
  check: {
    summary: "--user NAME [--sshd-config FILE] [--schedule S] [--schedule-dir DIR]   verify the account's layout, housekeeping schedule and sshd settings (root)",
    run: async () => (await import("./remote/check.js")).checkMain,
  },
  seal: {
    summary: "--config FILE [--dry-run]   make settled files root-owned 0440 and directories 1770, sweep abandoned uploads (root)",
    run: async () => (await import("./housekeeping/seal.js")).sealMain,
  },
  hourly: {
    summary: "--config FILE [--keep-full N]   seal, prune and audit --record-head, each even if one before failed; the worst status (root, systemd's hourly unit)",
    run: async () => (await import("./housekeeping/hourly.js")).hourlyMain,
  },
  prune: {
    summary: "--config FILE [--keep-full N] [--older-than DURATION] [--dry-run]   remove whole old duplicity chains; neither option: the config's housekeeping.keepFull (root)",
    run: async () => (await import("./housekeeping/prune.js")).pruneMain,
  },
};

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(TOP, "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

function help(): string {
  const lines = Object.entries(SUBCOMMANDS).map(([n, s]) => `  validate-backup ${n} ${s.summary}`);
  return [
    "validate-backup: an SSH forced command that lets a backup key add files and nothing else.",
    "",
    "Usage:",
    "  validate-backup --config FILE          (in authorized_keys: command=\"… --config FILE\",restrict)",
    ...lines,
    "  validate-backup --help | --version",
    "",
    "Serve mode reads SSH_ORIGINAL_COMMAND and answers only append-only (or read-only) SFTP, scp and",
    "rsync, confined to the config's root. See README.md.",
  ].join("\n");
}

async function serveMain(args: string[]): Promise<number> {
  if (args.length !== 2 || args[0] !== "--config") {
    process.stderr.write(`validate-backup: usage: validate-backup --config FILE (got: ${args.join(" ").slice(0, 200)})\n`);
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
  const sub = first !== undefined && Object.hasOwn(SUBCOMMANDS, first) ? SUBCOMMANDS[first] : undefined;
  if (!sub) {
    process.stderr.write(`validate-backup: unknown command '${String(first).slice(0, 64)}' (see --help)\n`);
    return 2;
  }
  // Every subcommand's usage in one style, from the table, without loading the subcommand.
  if (rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h")) {
    process.stdout.write(`usage: validate-backup ${first} ${sub.summary}\n`);
    return 0;
  }
  return (await sub.run())(rest);
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
