// What one session may write to the (append-only) audit log of each kind of line a client can
// cause at will. Two classes, because they fail differently:
// - "drop": lines about what did NOT happen or only looked (refusals, errors, reads, skips). Past
//   the limit they are counted instead of written: one line says so when the limit is reached,
//   and session-end carries how many of each kind were not written.
// - "refuse": lines that record what is stored (a published file and its SHA-256, a directory, an
//   own file renamed or removed, a restic lock removed: what verify --stored and prune's ledger
//   replay). These are never
//   dropped: past the limit the act itself is refused, so nothing is ever stored without its line.
// The drop class is also held to MAX_DROP_BYTES, so that its lines stay under ~1 MiB per session
// however long the names and reasons a client makes us write.

export type Kind = "refusal" | "error" | "client-error" | "read" | "skip" | "times" | "store" | "rename";

interface Rule {
  class: "drop" | "refuse";
  lines: number;
  /** Reaching the limit is itself worth a look (review's anomalies). */
  anomaly: boolean;
}

// Drop limits add up to 1,900: with the few fixed lines of a session (request, session-end, the
// notices below) a session writes at most 2,000 lines of them.
export const KINDS: Readonly<Record<Kind, Rule>> = {
  refusal: { class: "drop", lines: 700, anomaly: true },
  error: { class: "drop", lines: 150, anomaly: true },
  "client-error": { class: "drop", lines: 150, anomaly: true },
  read: { class: "drop", lines: 400, anomaly: false },
  skip: { class: "drop", lines: 300, anomaly: false },
  times: { class: "drop", lines: 200, anomaly: false },
  // A session storing this many files and directories is a very large backup (100,000 duplicity
  // volumes are 20 TB); a client making empty files in a loop is stopped there.
  store: { class: "refuse", lines: 100_000, anomaly: true },
  rename: { class: "refuse", lines: 10_000, anomaly: true },
};

/** The kind of each budgeted event; an event not named here is one per session or per stored file's line, never dropped. */
export const EVENT_KIND: Readonly<Record<string, Kind>> = {
  refused: "refusal",
  "upload-refused": "refusal",
  quota: "refusal",
  error: "error",
  "upload-failed": "error",
  "upload-abandoned": "error",
  "client-error": "client-error",
  read: "read",
  download: "read",
  skipped: "skip",
  "times-set": "times",
  publish: "store",
  // An answered upload whose link failed (Vault.admitLater): the only record of a file the client was
  // told is stored, so never dropped; it takes the place of the publish line that had room.
  "publish-failed": "store",
  "resend-same": "store",
  mkdir: "store",
  rename: "rename",
  "remove-own": "rename",
  "remove-lock": "rename",
};

/** Bytes of drop-class lines per session; what is left of 1 MiB is the fixed lines' (a line is at most a few KiB). */
export const MAX_DROP_BYTES = 896 * 1024;

export type Verdict = "write" | "drop" | "announce";

export class Budget {
  private readonly written = new Map<Kind, number>();
  private readonly dropped = new Map<Kind, number>();
  private dropBytes = 0;

  /** Whether a line of `event` may be written now; a dropped one is counted. "announce": drop it, and say so once. */
  judge(event: string): Verdict {
    const kind = EVENT_KIND[event];
    if (!kind) return "write";
    const rule = KINDS[kind];
    if (rule.class === "refuse") return "write"; // the caller asked room() before acting
    const n = this.written.get(kind) ?? 0;
    if (n < rule.lines && this.dropBytes < MAX_DROP_BYTES) return "write";
    const d = (this.dropped.get(kind) ?? 0) + 1;
    this.dropped.set(kind, d);
    return d === 1 ? "announce" : "drop";
  }

  /** A line of `event` was written, `bytes` long. */
  wrote(event: string, bytes: number): void {
    const kind = EVENT_KIND[event];
    if (!kind) return;
    this.written.set(kind, (this.written.get(kind) ?? 0) + 1);
    if (KINDS[kind].class === "drop") this.dropBytes += bytes;
  }

  /** Whether one more line of `event` fits (for the refuse class: may the act be done). */
  room(event: string): boolean {
    const kind = EVENT_KIND[event];
    return !kind || (this.written.get(kind) ?? 0) < KINDS[kind].lines;
  }

  /** The number of lines of `event`'s kind one session may write. */
  limitOf(event: string): number {
    const kind = EVENT_KIND[event];
    return kind ? KINDS[kind].lines : Infinity;
  }

  /** The line that says a kind's lines stop here. */
  notice(event: string): Record<string, unknown> {
    const kind = EVENT_KIND[event]!;
    const why = this.dropBytes >= MAX_DROP_BYTES ? `${MAX_DROP_BYTES} bytes of such lines` : `${KINDS[kind].lines} ${kind} lines`;
    return {
      kind,
      ...(KINDS[kind].anomaly ? { anomaly: true } : {}),
      reason: `this session wrote ${why}: further ${kind} lines are not written, session-end counts them (notWritten)`,
    };
  }

  /** For session-end: lines written and not written, per kind (only kinds that occurred). */
  counts(): { lines: Partial<Record<Kind, number>>; notWritten?: Partial<Record<Kind, number>> } {
    const lines = Object.fromEntries(this.written);
    return this.dropped.size ? { lines, notWritten: Object.fromEntries(this.dropped) } : { lines };
  }
}
