// Which audit lines record a refusal, as a table: the review, `audit --denied` and the burst anomaly
// all read it, so a refusal logged under a new event name is counted once it is added here. Every
// event a session writes is listed in KNOWN_EVENTS; the test of this file greps the sources for
// event names and fails on one that is in neither table.

/** What was refused, in the words the review prints. */
export type RefusalKind = "command" | "sftp" | "scp" | "rsync skip" | "rsync push" | "upload" | "error" | "other";

interface Rule {
  kind: RefusalKind | ((j: Record<string, unknown>) => RefusalKind);
  /** Only lines that pass this count (the event also names lines that are no refusal). */
  when?: (j: Record<string, unknown>) => boolean;
}

export const REFUSAL_EVENTS: Readonly<Record<string, Rule>> = {
  // The gate refused the command line (the allowed request lines carry decision: allow).
  request: { kind: "command", when: (j) => j.decision === "deny" },
  // An SFTP request or an scp entry refused. op "*" is the note that further ones are only counted
  // (session-end carries them; the review adds them from there).
  refused: { kind: (j) => (j.protocol === "scp" ? "scp" : "sftp"), when: (j) => j.op !== "*" },
  // A file rsync sent that was not stored.
  skipped: { kind: "rsync skip" },
  // A whole rsync push refused (quota or reserve): nothing published.
  "rsync-exit": { kind: "rsync push", when: (j) => typeof j.code === "string" },
  // An upload the encryption guard refused.
  "upload-refused": { kind: "upload" },
  // A write that failed: the upload is not published.
  "upload-failed": { kind: "error" },
  // An upload answered before its link, whose link then failed: the client was told it is stored.
  "publish-failed": { kind: "error" },
  error: { kind: "error" },
};

/**
 * Events that record no refusal of their own: allowed work, root's housekeeping, notes. `quota` is
 * always followed by the protocol's own refusal line (refused, rsync-exit), which is the one counted;
 * `client-error` is the client's complaint, not ours; `budget` says a kind's lines stop (budget.ts).
 */
export const KNOWN_EVENTS: readonly string[] = [
  "anomaly", "arrival-not-recorded", "budget", "client-error", "download", "idle-timeout", "list", "mkdir", "no-arrivals",
  "key-removed", "key-removal-unfinished", "notify", "prune", "prune-chain", "publish", "quota", "read", "remove-lock", "remove-own", "rename", "replace", "resend-same", "rotate",
  "rsync", "seal", "seal-skip", "session-end", "swept", "sweep-failed", "times-set", "trailing-bytes",
  "upload-abandoned", "verify-stored",
];

/** The kind of refusal a line records, or undefined when it records none. */
export function refusalOf(j: Record<string, unknown>): RefusalKind | undefined {
  const event = typeof j.event === "string" ? j.event : "";
  const rule = Object.hasOwn(REFUSAL_EVENTS, event) ? REFUSAL_EVENTS[event] : undefined;
  if (rule) {
    if (rule.when && !rule.when(j)) return undefined;
    return typeof rule.kind === "function" ? rule.kind(j) : rule.kind;
  }
  // A deny under an event this table does not know yet still counts: never silently missed.
  return j.decision === "deny" ? "other" : undefined;
}
