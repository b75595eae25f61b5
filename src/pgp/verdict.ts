// What gpg's status lines mean for one file. A file passes only on positive evidence (decrypted,
// integrity-protected, every signature good and by a --signer key, the whole file read); anything
// gpg says against it is a named failure. Tables, not branches: each keyword says what it means.
import type { RunResult, KeyInfo } from "./gpg.js";
import { lastLine } from "./gpg.js";

/** Worst first: a file's status is its worst problem. */
export const STATUSES = ["MISSING", "NOT ENCRYPTED", "DAMAGED", "HASH MISMATCH", "BAD SIGNATURE", "MISPLACED", "UNVERIFIED", "EXTRA", "UNREADABLE", "OK"] as const;
export type Status = (typeof STATUSES)[number];

export interface Problem {
  status: Status;
  detail: string;
}

export interface Verdict {
  problems: Problem[];
  notes: string[];
  /** Creation times (seconds) of the good signatures, for the set's time window. */
  signedAt: number[];
}

type Args = string[];
/** Keywords that are a failure whenever gpg writes them. */
const AGAINST: Record<string, (a: Args) => Problem> = {
  BADSIG: (a) => ({ status: "BAD SIGNATURE", detail: `the signature by ${a[0]} does not verify: modified after signing (BADSIG)` }),
  ERRSIG: (a) => ({ status: "BAD SIGNATURE", detail: a[5] === "9" ? `signed by key ${a[0]}, which is not a --signer key (ERRSIG)` : `the signature by ${a[0]} cannot be checked (ERRSIG, code ${a[5]})` }),
  REVKEYSIG: (a) => ({ status: "BAD SIGNATURE", detail: `signed by ${a[0]}, a revoked key (REVKEYSIG)` }),
  BADMDC: () => ({ status: "DAMAGED", detail: "modified: the integrity check failed (BADMDC)" }),
  DECRYPTION_FAILED: () => ({ status: "DAMAGED", detail: "cannot be decrypted (DECRYPTION_FAILED)" }),
  NODATA: (a) => ({ status: "DAMAGED", detail: `no OpenPGP data where gpg expected it (NODATA ${a[0] ?? ""})` }),
  UNEXPECTED: (a) => ({ status: "DAMAGED", detail: `unexpected OpenPGP data (UNEXPECTED ${a[0] ?? ""})` }),
  FAILURE: (a) => ({ status: "DAMAGED", detail: `gpg failed in ${a[0] ?? "?"} (FAILURE ${a[1] ?? ""})` }),
};

const has = (r: RunResult, key: string) => r.status.lines.has(key);

/** Signatures: every one good and by a signer key, at least one. */
function signatures(r: RunResult, signers: KeyInfo, v: Verdict, read: boolean): void {
  const started = r.status.lines.get("NEWSIG")?.length ?? 0;
  let good = 0;
  for (const a of r.status.lines.get("VALIDSIG") ?? []) {
    const subkey = (a[0] ?? "").toUpperCase();
    const primary = (a[9] ?? "").toUpperCase();
    if (!signers.fingerprints.has(subkey) && !signers.fingerprints.has(primary)) {
      v.problems.push({ status: "BAD SIGNATURE", detail: `signed by ${primary || subkey}, which is not a --signer key` });
      continue;
    }
    good++;
    const at = Number(a[2]);
    if (Number.isFinite(at)) v.signedAt.push(at);
  }
  // Unread content (a failed decryption) says nothing about signatures: the file failed already.
  if (started === 0 && read) v.problems.push({ status: "BAD SIGNATURE", detail: "not signed" });
  else if (good < started && !v.problems.some((p) => p.status === "BAD SIGNATURE")) v.problems.push({ status: "BAD SIGNATURE", detail: `${started - good} of ${started} signatures not good` });
  if (has(r, "EXPKEYSIG")) v.notes.push("the signing key has expired since (the signature was made before)");
}

function common(r: RunResult, v: Verdict, size: number): void {
  for (const [key, why] of Object.entries(AGAINST)) for (const a of r.status.lines.get(key) ?? []) v.problems.push(why(a));
  if (!r.complete) v.problems.push({ status: "DAMAGED", detail: `gpg stopped reading before the end of the file (${size} bytes): trailing data, or a damaged packet` });
  if (r.signal) v.problems.push({ status: "UNREADABLE", detail: `gpg was killed by ${r.signal}` });
}

/** gpg's exit status, last: it only adds a problem when no status line explained the failure. */
function exitStatus(r: RunResult, v: Verdict): Verdict {
  if (r.exit !== 0 && !r.signal && !v.problems.length) v.problems.push({ status: "DAMAGED", detail: `gpg exited ${r.exit}: ${lastLine(r.stderr) || "no reason given"}` });
  return dedupe(v);
}

/** A signed and encrypted file, decrypted with the given secret key. */
export function judgeDecryption(r: RunResult, signers: KeyInfo, size: number): Verdict {
  const v: Verdict = { problems: [], notes: [], signedAt: [] };
  const okay = has(r, "DECRYPTION_OKAY");
  if (!okay && has(r, "NO_SECKEY")) {
    const ids = (r.status.lines.get("NO_SECKEY") ?? []).map((a) => a[0]).join(", ");
    v.problems.push({ status: "NOT ENCRYPTED", detail: `not encrypted to the --secret-key (it names ${ids})` });
  }
  common(r, v, size);
  if (!has(r, "BEGIN_DECRYPTION")) v.problems.push({ status: "DAMAGED", detail: "gpg did not begin to decrypt" });
  else if (!has(r, "END_DECRYPTION")) v.problems.push({ status: "DAMAGED", detail: `decryption stopped in the middle: ${lastLine(r.stderr) || "no reason given"}` });
  if (!okay && !v.problems.length) v.problems.push({ status: "DAMAGED", detail: "gpg did not report a good decryption" });
  // Integrity: the MDC of a version 1 encrypted packet, or an AEAD mode (DECRYPTION_INFO's third field).
  const aead = (r.status.lines.get("DECRYPTION_INFO") ?? []).some((a) => a[2] !== undefined && a[2] !== "0");
  if (okay && !has(r, "GOODMDC") && !aead) v.problems.push({ status: "DAMAGED", detail: "not integrity-protected (no MDC, no AEAD): a modification could not be detected" });
  signatures(r, signers, v, okay);
  return exitStatus(r, v);
}

/** A detached signature checked over the file it names. */
export function judgeDetached(r: RunResult, signers: KeyInfo, size: number): Verdict {
  const v: Verdict = { problems: [], notes: [], signedAt: [] };
  common(r, v, size);
  signatures(r, signers, v, true);
  return exitStatus(r, v);
}

function dedupe(v: Verdict): Verdict {
  const seen = new Set<string>();
  v.problems = v.problems.filter((p) => !seen.has(p.detail) && seen.add(p.detail));
  return v;
}
