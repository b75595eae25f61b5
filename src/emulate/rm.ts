// `rm` (duplicity's remove-older-than, cleanup…): always refused. Nothing stored can be removed
// through this key; duplicity logs the refusal and carries on.
import { VbError } from "../errors.js";
import type { Policy } from "../config/schema.js";

export function refuseRm(policy: Pick<Policy, "access">): never {
  if (policy.access === "read-only") throw new VbError("READ_ONLY", "read-only: files cannot be removed (rm refused)");
  throw new VbError("IMMUTABLE", "append-only: files cannot be removed (rm refused)");
}

/** The gate refuses rm before any handler runs; this is the same refusal, should a plan get here. */
export async function runRm(_plan: unknown, ctx: { session: { policy: Pick<Policy, "access"> } }): Promise<number> {
  refuseRm(ctx.session.policy);
}
