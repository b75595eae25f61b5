// The one access rule: what a key's `access` and `pull` settings let a client do, by class of
// operation. The gate (decide.ts), the SFTP request table and the vault all ask here.
//   look:  stat, list, realpath          pull:  read a file's contents          write: create or change
import { VbError } from "../errors.js";
import type { Policy } from "../config/schema.js";

export type Access = "look" | "pull" | "write";
/** metadata: only the files the profile calls metadata (the vault judges each by its name). */
export type Verdict = "yes" | "no" | "metadata";

const READ_ONLY = { look: "yes", pull: "yes", write: "no" } as const;
const RULES: Record<Policy["access"], Record<`${Policy["pull"]}`, Record<Access, Verdict>>> = {
  "read-only": { true: READ_ONLY, metadata: READ_ONLY, false: READ_ONLY },
  "append-only": {
    true: { look: "yes", pull: "yes", write: "yes" },
    metadata: { look: "yes", pull: "metadata", write: "yes" },
    false: { look: "yes", pull: "no", write: "yes" },
  },
};

export function permits(policy: Pick<Policy, "access" | "pull">, access: Access): Verdict {
  return RULES[policy.access][`${policy.pull}`][access];
}

// `what` says what was refused, in the words of the protocol that asked.
const REFUSAL: Record<Access, (what: string) => VbError> = {
  look: (what) => new VbError("NOT_ALLOWED", `${what} is not allowed for this key`),
  pull: (what) => new VbError("NOT_ALLOWED", `${what} is disabled for this key (pull: false)`),
  write: (what) => new VbError("READ_ONLY", `read-only: ${what}`),
};

/** Throws the refusal unless `policy` permits `access` (at least for some files). */
export function demand(policy: Pick<Policy, "access" | "pull">, access: Access, what: string): void {
  if (permits(policy, access) === "no") throw REFUSAL[access](what);
}
