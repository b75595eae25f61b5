// The per-key policy. This schema is the single source of the config's types and defaults; unknown
// keys are errors at every level (strictObject), because a misspelt limit must not silently vanish.
// zod/mini, not zod's classic API: every SSH session is a fresh node that parses one config, and
// loading the classic API (method chains on every schema) cost a third of a session's start-up.
import * as z from "zod/mini";
import { en } from "zod/locales";
import path from "node:path";

// zod/mini loads no messages of its own; without a locale every fault would read "Invalid input".
// jitless: the JIT (a fast path compiled with new Function on the first parse) costs more than it
// saves for one parse.
z.config({ ...en(), jitless: true });

const int = (min: number, max?: number) => z.int().check(z.gte(min), ...(max === undefined ? [] : [z.lte(max)]));

const absPath = z.string().check(
  z.minLength(2),
  z.maxLength(1024),
  z.refine((p) => path.isAbsolute(p), "must be an absolute path"),
  z.refine((p) => !p.includes("\0"), "must not contain NUL"),
  z.refine((p) => path.normalize(p) === p && !p.endsWith("/"), "must be normalized (no '..', '//' or trailing '/')"),
);

export const PROTOCOLS = ["sftp", "scp", "rsync"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const GiB = 1024 ** 3;

export const LimitsSchema = z.strictObject({
  /** concurrent sessions of this key */
  sessions: z._default(int(1, 1000), 4),
  sessionSeconds: z._default(int(10, 7 * 24 * 3600), 12 * 3600),
  idleSeconds: z._default(int(5, 24 * 3600), 900),
  maxFileBytes: z._default(int(1), 256 * GiB),
  maxSessionBytes: z._default(int(1), 4096 * GiB),
  maxOpenHandles: z._default(int(1, 4096), 64),
  /** bytes this key may have stored, root and state together, uploads in flight included; unset: no quota */
  maxStoredBytes: z.optional(int(1)),
  /** free space every upload leaves on the filesystem (0 in tests on a small one) */
  minFreeBytes: z._default(int(0), GiB),
  /** bytes per second each session of this key may move, in and out together; unset: unlimited */
  bytesPerSecond: z.optional(int(65536)),
});

// A guardrail against a misconfigured SOURCE (see src/pgp/guard.ts), not a proof of encryption.
export const EncryptionSchema = z
  .strictObject({
    /** every uploaded file must be an OpenPGP encrypted message or a detached signature */
    required: z._default(z.boolean(), false),
    /** OpenPGP certificates; one of their keys must be a named recipient */
    recipients: z._default(z.array(absPath).check(z.maxLength(32)), []),
    /** accept hidden recipients (gpg --throw-keyids) when recipients are given */
    anonymousRecipients: z._default(z.boolean(), false),
  })
  .check(z.refine((e) => e.required || (e.recipients.length === 0 && !e.anonymousRecipients), "'recipients' and 'anonymousRecipients' need 'required': true"));

// Root-side seal and prune (src/housekeeping/); the gatekeeper itself never reads these.
export const HousekeepingSchema = z.strictObject({
  /** group that may read sealed files (default: the group of the root directory) */
  group: z.optional(z.union([int(0), z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, "a group name or number"))])),
  /** seal leaves files younger than this for the next run */
  minAgeMinutes: z._default(int(0, 7 * 24 * 60), 15),
  /** prune warns when nothing arrived for longer */
  warnNoArrivalHours: z._default(z.number().check(z.gte(1), z.lte(366 * 24)), 48),
  // Here rather than only in the schedule's command line: check rebuilds the schedule from the config.
  /** full chains install-remote's schedule has prune keep (--keep-full) */
  keepFull: z._default(int(1, 99999), 4),
  // The retention floor: whatever --keep-full and --older-than say, prune removes nothing that
  // arrived (our clock) more recently. A key holder can make chains look old by uploading newer
  // ones; this is how long they must stay unnoticed before that removes anything real.
  /** prune never removes a file that arrived, or a version kept, fewer days ago */
  retentionDays: z._default(int(1, 36500), 30),
  // An argv, never a shell line: the hourly run's notify step execs it with the message on stdin.
  /** run once per condition (no arrival for warnNoArrivalHours, a failed step, an anomaly) until it clears */
  notify: z.optional(
    z
      .array(z.string().check(z.minLength(1), z.maxLength(4096), z.refine((a) => !a.includes("\0"), "must not contain NUL")))
      .check(z.minLength(1), z.maxLength(64), z.refine((a) => path.isAbsolute(a[0] ?? "") && path.normalize(a[0]!) === a[0], "the program (the first word) must be a normalized absolute path: no shell runs it and no PATH is searched")),
  ),
});

export const ConfigSchema = z.strictObject({
  label: z.optional(z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, "letters, digits, '.', '_', '@', '-' (at most 64)"))),
  root: absPath,
  state: z.optional(absPath),
  access: z._default(z.enum(["append-only", "read-only"]), "append-only"),
  // "metadata": manifests and signature files only (what duplicity needs when its cache is lost).
  pull: z._default(z.union([z.boolean(), z.literal("metadata")]), true),
  /** naming rules of the uploads (src/profile/) */
  profile: z._default(z.enum(["duplicity", "plain"]), "duplicity"),
  /** resume: duplicity may send the last volume of an unfinished set again */
  replace: z._default(z.enum(["never", "resume"]), "resume"),
  protocols: z._default(z.array(z.enum(PROTOCOLS)).check(z.minLength(1)), () => [...PROTOCOLS]),
  audit: z.strictObject({ file: absPath }),
  limits: z._default(LimitsSchema, () => LimitsSchema.parse({})),
  rsync: z._default(z.strictObject({ path: z._default(absPath, "/usr/bin/rsync") }), { path: "/usr/bin/rsync" }),
  encryption: z._default(EncryptionSchema, () => EncryptionSchema.parse({})),
  housekeeping: z._default(HousekeepingSchema, () => HousekeepingSchema.parse({})),
});

export type ConfigInput = z.input<typeof ConfigSchema>;
export type Config = z.output<typeof ConfigSchema>;

// What the rest of the program uses: the config with its derived values filled in.
export type Policy = Config & { label: string; state: string; configPath: string };
