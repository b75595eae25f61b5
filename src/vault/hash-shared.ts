// The memory an upload's session shares with the hashing worker (hasher.ts, hash-worker.ts).
export interface Job {
  fd: number;
  shared: SharedArrayBuffer;
}

/**
 * Int32 slots: a counter bumped on every change (the worker sleeps on it), the session's request,
 * the worker's answer, and who claimed the job first: the worker when it starts, or the session
 * when it needs the digest before the worker got to it (then the worker never touches the file).
 */
export const CTL = { tick: 0, state: 1, done: 2, claim: 3 } as const;
export const CLAIM = { none: 0, worker: 1, session: 2 } as const;
export const STATE = { writing: 0, last: 1, stop: 2 } as const;
export const DONE = { no: 0, ok: 1, stopped: 2, failed: 3 } as const;

export const SHARED_BYTES = 16 + 8 + 32;

export function layout(shared: SharedArrayBuffer) {
  return {
    ctl: new Int32Array(shared, 0, 4),
    /** Bytes written in order from offset 0: what the worker may hash. */
    written: new BigInt64Array(shared, 16, 1),
    digest: new Uint8Array(shared, 24, 32),
  };
}
