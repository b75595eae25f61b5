// Every subcommand's usage, in one table: `--help` prints it, and every "usage:" a subcommand
// prints on a wrong command line comes from here too, so the two can never tell different stories.
// A leaf: cli.ts reads it without loading any subcommand.
import { VbError } from "./errors.js";

export interface Usage {
  /** Each way to call it, after "validate-backup " (the first names the subcommand). */
  synopsis: string[];
  /** What it does, one line. */
  about: string;
  /** Options worth a word (defaults, units), shown with --help. */
  notes?: string[];
}

export const USAGES = {
  serve: {
    synopsis: ["serve --config FILE", '--config FILE   (in authorized_keys: command="… --config FILE",restrict)'],
    about: "serve one SSH session (the default; SSH_ORIGINAL_COMMAND says what)",
  },
  verify: {
    synopsis: ["verify DIR --signer CERT [--recipient CERT]… [--secret-key KEY [--passphrase-file FILE]]", "verify --stored --config FILE"],
    about: "check a backup copy: encrypted, signed, complete | every stored file against the audit log's hashes (root)",
  },
  audit: {
    synopsis: [
      "audit [--file LOG | --config F]… [--since T] [--denied] [--json] [--max-gap D]",
      "audit --verify [--file LOG | --config F]… [--head FILE]",
      "audit --record-head [--file LOG | --config F]… [--head FILE]",
      "audit --rotate --config F",
    ],
    about: "review the audit log, verify its chain, record its head, rotate it keeping the chain (root)",
    notes: ["T: an ISO date or time (2024-05-01, 2024-05-01T12:00Z) or an age (90m, 36h, 7d); D: an age (default 26h)"],
  },
  demo: {
    synopsis: ["demo [--keep]"],
    about: "a local demo: a backup added through the real sftp client, a delete and an overwrite refused",
  },
  "install-remote": {
    synopsis: [
      "install-remote --user NAME --root DIR --key PUBKEY_FILE [--from PATTERN] [--access append-only|read-only] [--label NAME] [--home DIR] " +
        "[--sshd-dropin] [--rebind] [--dry-run] [--config-dir DIR] [--log-dir DIR] [--sshd-config FILE] [--keep-full N] [--retention-days N] [--quota SIZE] " +
        "[--schedule auto|systemd|cron|none] [--schedule-dir DIR]",
      "install-remote --remove --label NAME …   (remove-key, under the name an admin may look for first)",
    ],
    about: "lock a backup account down and give one SOURCE key to the gate, then check it (root)",
    notes: [
      "--config-dir /etc/validate-backup, --log-dir /var/log/validate-backup, --sshd-config /etc/ssh/sshd_config unless given",
      "--keep-full N: full chains prune keeps (the config's, else 4); --retention-days N: prune removes nothing younger (the config's, else 30)",
      "--quota SIZE: bytes the key may store, root and state together (500G, 2T; the config's, else none)",
      "--schedule: auto is systemd where it runs, else cron; --schedule-dir: /etc/systemd/system or /etc/cron.d",
      "--rebind: move a key already installed under another label, or a label to another root",
    ],
  },
  "remove-key": {
    synopsis: ["remove-key --label NAME [--user NAME] [--dry-run] [--config-dir DIR] [--sshd-config FILE] [--schedule auto|systemd|cron|none] [--schedule-dir DIR]"],
    about: "take a key out: its key line, config, schedule, and the sshd drop-in with the last key; backups and audit log stay (root)",
    notes: [
      "--user: found from the key lines unless given",
      "--config-dir /etc/validate-backup, --sshd-config /etc/ssh/sshd_config unless given",
      "--schedule: auto looks in both places; --schedule-dir: /etc/systemd/system and /etc/cron.d unless given",
    ],
  },
  check: {
    synopsis: ["check --user NAME [--sshd-config FILE] [--schedule auto|systemd|cron|none] [--schedule-dir DIR]"],
    about: "verify the account's layout, housekeeping schedule and sshd settings (root)",
    notes: ["--schedule and --schedule-dir: where install-remote put the housekeeping schedule (its defaults unless given)"],
  },
  seal: {
    synopsis: ["seal --config FILE [--dry-run]"],
    about: "make settled files root-owned 0440 and directories 1770, sweep abandoned uploads (root)",
  },
  hourly: {
    synopsis: ["hourly --config FILE [--keep-full N]"],
    about: "seal, prune and audit --record-head, each even if one before failed, then notify and metrics; the worst status (root, systemd's hourly unit)",
    notes: ["--keep-full N: full chains prune keeps (the config's housekeeping.keepFull unless given)"],
  },
  status: {
    synopsis: ["status [--config FILE]… [--config-dir DIR] [--json]"],
    about: "one line per key: last arrival, stored, anomalies, housekeeping; exit 1 when one is stale or failing (root)",
    notes: ["--config-dir /etc/validate-backup (every *.json) unless --config names the keys; both: both"],
  },
  metrics: {
    synopsis: ["metrics [--config FILE]… [--config-dir DIR] [--output FILE]"],
    about: "every key's figures as a Prometheus textfile-collector file, written atomically (root)",
    notes: ["--output /var/lib/prometheus/node-exporter/validate-backup.prom unless given (nothing written where its directory is missing)", "--config-dir /etc/validate-backup unless --config names the keys"],
  },
  notify: {
    synopsis: ["notify --config FILE"],
    about: "run housekeeping.notify once for each new condition: stale, a failed step, an anomaly (root, after the hourly steps)",
  },
  prune: {
    synopsis: ["prune --config FILE [--keep-full N] [--older-than DURATION] [--dry-run]"],
    about: "remove whole old duplicity chains (root)",
    notes: ["neither --keep-full nor --older-than: the config's housekeeping.keepFull"],
  },
} satisfies Record<string, Usage>;

export type Subcommand = keyof typeof USAGES;

/** "usage: validate-backup …", one line per way to call it: what every wrong command line ends with. */
export function usageText(sub: Subcommand): string {
  return USAGES[sub].synopsis.map((s, i) => `${i ? "      " : "usage:"} validate-backup ${s}`).join("\n");
}

/** --help: the usage, what it does, and the notes. */
export function helpText(sub: Subcommand): string {
  const u: Usage = USAGES[sub];
  return [usageText(sub), "", u.about, ...(u.notes ?? []).map((n) => `  ${n}`)].join("\n");
}

/** A wrong command line: the message says why; the usage is kept apart, so that the printer can make
 * the reason (which may quote an option or a name) visible without escaping the usage's own lines. */
export class UsageFault extends VbError {
  constructor(
    why: string,
    readonly usage: string,
  ) {
    super("BAD_REQUEST", why);
  }
}

/** The refusal of a wrong command line: why, then the usage (exit 2 where it is caught). */
export function usageFault(sub: Subcommand, why: string): UsageFault {
  return new UsageFault(why, usageText(sub));
}
