// A large audit log, written fast: valid chain lines (each links to the previous line's hash), as
// sessions of many client addresses write them. For the review's scale test and by-hand timings.
import fs from "node:fs";
import { chainLine, lineHash, CHAIN_START } from "../../src/audit/chain.js";

export interface Generated {
  lines: number;
  clients: number;
  refusals: number;
  publishes: number;
}

/**
 * `sessions` sessions of key `label`, each from its own client address among `clients` (round robin),
 * 10 lines each: request, 3 reads, 2 publishes, a refused removal, a download, a mkdir, session-end.
 * One minute apart from `start`.
 */
export function writeLog(file: string, sessions: number, clients: number, start = Date.UTC(2026, 0, 1), label = "big"): Generated {
  const fd = fs.openSync(file, "w", 0o600);
  let prev = CHAIN_START;
  let chunk: string[] = [];
  let size = 0;
  let lines = 0;
  const flush = () => {
    fs.writeSync(fd, chunk.join(""));
    chunk = [];
    size = 0;
  };
  const put = (o: Record<string, unknown>) => {
    const text = chainLine(JSON.stringify(o), prev);
    prev = lineHash(Buffer.from(text.slice(0, -1)));
    chunk.push(text);
    size += text.length;
    lines++;
    if (size > 1 << 20) flush();
  };
  try {
    for (let s = 0; s < sessions; s++) {
      const n = s % clients;
      const client = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
      const time = new Date(start + s * 60_000).toISOString();
      const base = { level: "info", time, label, sid: `s${s}`, client };
      put({ ...base, event: "request", decision: "allow", command: "internal-sftp", plan: "sftp" });
      for (let r = 0; r < 3; r++) put({ ...base, event: "read", path: `h/duplicity-full.20260101T000000Z.vol${r + 1}.difftar.gpg`, bytes: 1000 });
      for (let p = 0; p < 2; p++) put({ ...base, event: "publish", path: `h/file-${s}-${p}.gpg`, size: 4096, sha256: "0".repeat(64) });
      put({ ...base, level: "warn", event: "refused", op: "remove", path: `h/file-${s}-0.gpg`, code: "IMMUTABLE", reason: `append-only: 'h/file-${s}-0.gpg' cannot be removed` });
      put({ ...base, event: "download", protocol: "scp", path: "h/x.gpg", size: 10 });
      put({ ...base, event: "mkdir", path: `h/d${s}` });
      put({ ...base, event: "session-end", bytesIn: 8192, bytesOut: 3000, published: 2, skipped: 0, refused: 1, exit: 0 });
    }
    flush();
  } finally {
    fs.closeSync(fd);
  }
  return { lines, clients: Math.min(clients, sessions), refusals: sessions, publishes: 2 * sessions };
}
