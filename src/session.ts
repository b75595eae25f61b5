// What one SSH session carries through every layer: who it is, its policy, its audit sink and the
// figures that end up in the session's closing audit line.
import fs from "node:fs";
import type { Policy } from "./config/schema.js";
import type { Audit } from "./audit/log.js";

/** The per-key session slots are lock files named this plus a number, in state/locks (serve.ts). */
export const SESSION_LOCK_PREFIX = "session.";

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

// From the kernel's random source directly: node:crypto would cost a refused command ~10 ms of
// start-up for four bytes (see audit/chain.ts).
export function newSid(): string {
  const bytes = Buffer.alloc(4);
  const fd = fs.openSync("/dev/urandom", fs.constants.O_RDONLY);
  try {
    if (fs.readSync(fd, bytes, 0, 4, null) !== 4) throw new Error("short read from /dev/urandom");
  } finally {
    fs.closeSync(fd);
  }
  return `${process.pid}-${bytes.toString("hex")}`;
}

export function newCounters(): Counters {
  return { bytesIn: 0, bytesOut: 0, published: 0, skipped: 0, refused: 0 };
}
