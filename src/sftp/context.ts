// What a request handler may use of its session: the contract between the request table
// (server.ts) and the handler families (files, names, dirs, extensions).
import type { Code } from "../errors.js";
import type { Session } from "../session.js";
import type { Vault } from "../vault/vault.js";
import type { Handles } from "./handles.js";
import type { BufferPool } from "./pool.js";

export interface SftpContext {
  readonly session: Session;
  readonly vault: Vault;
  readonly handles: Handles;
  /** Buffers of DATA replies, back in the pool once written. */
  readonly replies: BufferPool;
  /** Audits and counts a refusal that the handler answers without failing. */
  record(op: string, subject: string | undefined, code: Code, reason: string): void;
}
