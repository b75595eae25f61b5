// What one SSH session carries through every layer: who it is, its policy, its audit sink and the
// figures that end up in the session's closing audit line.
import crypto from "node:crypto";
import type { Policy } from "./config/schema.js";
import type { Audit } from "./audit/log.js";

export interface Counters {
  bytesIn: number;
  bytesOut: number;
  published: number;
  skipped: number;
  refused: number;
}

export interface Session {
  readonly sid: string;
  readonly policy: Policy;
  readonly audit: Audit;
  readonly rootReal: string;
  readonly counters: Counters;
  /** The protocol's last message when the session must end at once (SFTP: a status for the request being handled). */
  lastWords?: (message: string) => void;
}

export function newSid(): string {
  return `${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
}

export function newCounters(): Counters {
  return { bytesIn: 0, bytesOut: 0, published: 0, skipped: 0, refused: 0 };
}
