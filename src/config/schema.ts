// The per-key policy. This schema is the single source of the config's types and defaults; unknown
// keys are errors at every level (strictObject), because a misspelt limit must not silently vanish.
import { z } from "zod";
import path from "node:path";

// Each session parses one config once: zod's JIT (it compiles a fast path with new Function on the
// first parse) costs more than it saves there.
z.config({ jitless: true });

const absPath = z
  .string()
  .min(2)
  .max(1024)
  .refine((p) => path.isAbsolute(p), "must be an absolute path")
  .refine((p) => !p.includes("\0"), "must not contain NUL")
  .refine((p) => path.normalize(p) === p && !p.endsWith("/"), "must be normalized (no '..', '//' or trailing '/')");

export const PROTOCOLS = ["sftp", "scp", "rsync"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const GiB = 1024 ** 3;

export const LimitsSchema = z.strictObject({
  sessions: z.number().int().min(1).max(1000).default(4).describe("concurrent sessions of this key"),
  sessionSeconds: z.number().int().min(10).max(7 * 24 * 3600).default(12 * 3600),
  idleSeconds: z.number().int().min(5).max(24 * 3600).default(900),
  maxFileBytes: z.number().int().min(1).default(256 * GiB),
  maxSessionBytes: z.number().int().min(1).default(4096 * GiB),
  maxOpenHandles: z.number().int().min(1).max(4096).default(64),
});

// A guardrail against a misconfigured SOURCE (see src/pgp/guard.ts), not a proof of encryption.
export const EncryptionSchema = z
  .strictObject({
    required: z.boolean().default(false).describe("every uploaded file must be an OpenPGP encrypted message or a detached signature"),
    recipients: z.array(absPath).max(32).default([]).describe("OpenPGP certificates; one of their keys must be a named recipient"),
    anonymousRecipients: z.boolean().default(false).describe("accept hidden recipients (gpg --throw-keyids) when recipients are given"),
  })
  .refine((e) => e.required || (e.recipients.length === 0 && !e.anonymousRecipients), "'recipients' and 'anonymousRecipients' need 'required': true");

// Root-side seal and prune (src/housekeeping/); the gatekeeper itself never reads these.
export const HousekeepingSchema = z.strictObject({
  group: z
    .union([z.number().int().min(0), z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, "a group name or number")])
    .optional()
    .describe("group that may read sealed files (default: the group of the root directory)"),
  minAgeMinutes: z.number().int().min(0).max(7 * 24 * 60).default(15).describe("seal leaves files younger than this for the next run"),
  warnNoArrivalHours: z.number().min(1).max(366 * 24).default(48).describe("prune warns when nothing arrived for longer"),
  // Here rather than only in the schedule's command line: check rebuilds the schedule from the config.
  keepFull: z.number().int().min(1).max(99999).default(4).describe("full chains install-remote's schedule has prune keep (--keep-full)"),
});

export const ConfigSchema = z.strictObject({
  label: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, "letters, digits, '.', '_', '@', '-' (at most 64)")
    .optional(),
  root: absPath,
  state: absPath.optional(),
  access: z.enum(["append-only", "read-only"]).default("append-only"),
  // "metadata": manifests and signature files only (what duplicity needs when its cache is lost).
  pull: z.union([z.boolean(), z.literal("metadata")]).default(true),
  profile: z.enum(["duplicity", "plain"]).default("duplicity").describe("naming rules of the uploads (src/profile/)"),
  replace: z.enum(["never", "resume"]).default("resume").describe("resume: duplicity may send the last volume of an unfinished set again"),
  protocols: z.array(z.enum(PROTOCOLS)).min(1).default([...PROTOCOLS]),
  audit: z.strictObject({ file: absPath }),
  limits: LimitsSchema.default(LimitsSchema.parse({})),
  rsync: z.strictObject({ path: absPath.default("/usr/bin/rsync") }).default({ path: "/usr/bin/rsync" }),
  encryption: EncryptionSchema.default(EncryptionSchema.parse({})),
  housekeeping: HousekeepingSchema.default(HousekeepingSchema.parse({})),
});

export type ConfigInput = z.input<typeof ConfigSchema>;
export type Config = z.output<typeof ConfigSchema>;

// What the rest of the program uses: the config with its derived values filled in.
export type Policy = Config & { label: string; state: string; configPath: string };
