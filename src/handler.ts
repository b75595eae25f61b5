// The contract between serve.ts and the protocol runners: what a runner gets (the session and its
// vault), how any thrown value becomes a VbError, and how an error becomes the session's exit status.
import { VbError, type Code } from "./errors.js";
import type { Session } from "./session.js";
import type { Vault } from "./vault/vault.js";
import type { Plan } from "./gate/decide.js";

export interface Context {
  session: Session;
  vault: Vault;
}

export type Handler<K extends Plan["kind"] = Plan["kind"]> = (plan: Extract<Plan, { kind: K }>, ctx: Context) => Promise<number>;

export const EXIT = { ok: 0, refused: 1, config: 2, timeout: 3, failed: 4 } as const;

/** Anything thrown, as a VbError: ours as they are, the rest (a system failure) with `code`. */
export function toVbError(e: unknown, code: Code = "IO"): VbError {
  return e instanceof VbError ? e : new VbError(code, (e as Error)?.message ?? String(e));
}

/** A refusal is the client's doing (1); anything else is a failure (4). */
export function exitFor(err: VbError): number {
  return err.code === "IO" ? EXIT.failed : EXIT.refused;
}
