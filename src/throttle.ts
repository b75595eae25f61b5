// A session's bandwidth limit (`limits.bytesPerSecond`): a token bucket over every byte the session
// moves, in and out. The protocol loops count what they read or wrote and, when the bucket is in
// debt, stop reading (and answering) until it has refilled: the kernel's buffers and the client's
// own flow control then hold the client back. Bytes are counted after they moved, so any window of
// T seconds sees at most rate x T + BURST_SECONDS x rate + one read's worth.

/** The bucket holds this many seconds' worth: short bursts pass, no window goes far over the rate. */
const BURST_SECONDS = 0.5;

export class Throttle {
  private tokens = 0;
  private at: number;

  constructor(
    /** Bytes per second. */
    readonly rate: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.at = now();
  }

  /** Count n bytes that moved; the milliseconds to wait before the next may move (0: none). */
  spend(n: number): number {
    const t = this.now();
    this.tokens = Math.min(this.rate * BURST_SECONDS, this.tokens + ((t - this.at) * this.rate) / 1000) - n;
    this.at = t;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** spend(), then a promise that settles once the wait is over; undefined when there is none (no await needed). */
  pace(n: number): Promise<void> | undefined {
    const ms = this.spend(n);
    return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : undefined;
  }
}

/** The session's throttle, or undefined when the key has no limit (nothing is counted then). */
export function throttleFor(limits: { bytesPerSecond?: number | undefined }): Throttle | undefined {
  return limits.bytesPerSecond === undefined ? undefined : new Throttle(limits.bytesPerSecond);
}

/** rsync's --bwlimit for the same rate: KiB/s (rsync's unit), at least 1. */
export function rsyncBwlimit(bytesPerSecond: number): number {
  return Math.max(1, Math.floor(bytesPerSecond / 1024));
}
