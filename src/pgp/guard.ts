// The upload guardrail. With `encryption.required`, a finished upload is published only if its
// first packets make it an OpenPGP encrypted message or a detached signature (packets.ts says how
// closely each is read); with `recipients`, only if one of its public-key session key packets names
// a key or subkey of those certificates.
//
// It catches a misconfigured SOURCE (duplicity --no-encryption, a symmetric passphrase, the wrong
// --encrypt-key, a forgotten gpg step); it is not a proof of encryption: whoever holds the key can
// put a valid header in front of anything. Hidden recipients (gpg --throw-keyids write key id 0)
// cannot be matched, so they are refused unless `anonymousRecipients` says the admin wants them.
import fs from "node:fs";
import { VbError } from "../errors.js";
import type { Policy } from "../config/schema.js";
import type { Session } from "../session.js";
import { HEAD_BYTES, classify, describe, type KeyRef, type Shape } from "./packets.js";

type Encryption = Policy["encryption"];

export interface RecipientSet {
  keyIds: Set<string>;
  fingerprints: Set<string>;
  /** Primary key id of each certificate, for messages. */
  names: string[];
}

const MAX_CERT_BYTES = 1024 * 1024;
const prepared = new WeakMap<Encryption, RecipientSet>();

/** A certificate or key file: regular, at most 1 MiB, never through a link. */
export function readCert(file: string): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error("not a regular file");
    if (st.size > MAX_CERT_BYTES) throw new Error("larger than 1 MiB");
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Key ids and fingerprints of every key and subkey in the given certificate files (loads openpgp). */
export async function loadRecipients(files: readonly string[], what = "encryption.recipients"): Promise<RecipientSet> {
  const openpgp = await import("openpgp");
  const set: RecipientSet = { keyIds: new Set(), fingerprints: new Set(), names: [] };
  for (const file of files) {
    try {
      const bytes = readCert(file);
      const armored = bytes.subarray(0, 64).toString("latin1").trimStart().startsWith("-----");
      const keys = armored ? await openpgp.readKeys({ armoredKeys: bytes.toString("utf8") }) : await openpgp.readKeys({ binaryKeys: bytes });
      for (const key of keys) {
        set.names.push(key.getKeyID().toHex());
        for (const k of key.getKeys()) {
          set.keyIds.add(k.getKeyID().toHex());
          set.fingerprints.add(k.getFingerprint());
        }
      }
    } catch (e) {
      throw new VbError("BAD_REQUEST", `${what}: ${file} is not a usable OpenPGP certificate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  return set;
}

/** Load the configured certificates once, before the session accepts uploads. */
export async function prepareGuard(policy: Policy): Promise<void> {
  const enc = policy.encryption;
  if (!enc.required || enc.recipients.length === 0 || prepared.has(enc)) return;
  prepared.set(enc, await loadRecipients(enc.recipients));
}

function names(want: RecipientSet, r: KeyRef): boolean {
  if (r.fingerprint !== undefined) return want.fingerprints.has(r.fingerprint);
  return r.keyId !== null && want.keyIds.has(r.keyId);
}

export const PLAINTEXT = "refused: plaintext upload";
export const WRONG_RECIPIENT = "refused: not encrypted to an expected recipient";

/** null if the shape is acceptable under the policy, else the refusal (message for the client). */
export function judge(shape: Shape, enc: Encryption, want: RecipientSet | undefined, anonymousOk = enc.anonymousRecipients): string | null {
  if (!enc.required || shape.kind === "signature") return null;
  if (shape.kind === "other") return PLAINTEXT;
  if (!want) return null;
  if (shape.recipients.some((r) => names(want, r))) return null;
  if (anonymousOk && shape.recipients.some((r) => r.anonymous)) return null;
  return WRONG_RECIPIENT;
}

/** `n` bytes of an open file from `pos` (fewer at its end), read without moving it. */
function readAt(fd: number, pos: number, n: number): Buffer {
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const r = fs.readSync(fd, buf, got, n - got, pos + got);
    if (r <= 0) break;
    got += r;
  }
  return buf.subarray(0, got);
}

/** What an open file (a finished upload, a staged or a stored file) of `size` bytes is. */
export function classifyFd(fd: number, size: number): Shape {
  return classify(readAt(fd, 0, Math.min(HEAD_BYTES, size)), size, (pos, n) => readAt(fd, pos, n));
}

function expected(enc: Encryption, want: RecipientSet | undefined, shape: Shape): string {
  if (shape.kind !== "encrypted" || !want) return describe(shape);
  const hidden = shape.recipients.some((r) => r.anonymous) && !enc.anonymousRecipients ? "; hidden recipients are refused (encryption.anonymousRecipients)" : "";
  return `${describe(shape)}; expected one of ${[...want.names].join(", ")}${hidden}`;
}

/**
 * Check the file behind `fd` (`size` bytes) before it is published under `display`. Reads it from
 * disk, not from the write stream, so what is checked is what would be linked, whatever the order
 * the client wrote it in. Throws NOT_ALLOWED (and audits it) when the file must not be published.
 */
export function guardUpload(session: Session, fd: number, size: number, display: string): void {
  const enc = session.policy.encryption;
  if (!enc.required) return;
  const want = prepared.get(enc);
  if (enc.recipients.length && !want) throw new VbError("IO", "the encryption guard's recipient certificates were not loaded; refusing to publish");
  const shape = classifyFd(fd, size);
  const refusal = judge(shape, enc, want);
  if (refusal === null) return;
  const detail = expected(enc, want, shape);
  const reason = `${refusal}: '${display}' (${detail})`;
  session.audit.event("upload-refused", { decision: "deny", code: "NOT_ALLOWED", reason, path: display, size });
  throw new VbError("NOT_ALLOWED", reason);
}
