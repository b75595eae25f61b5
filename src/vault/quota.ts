// A key's quota (limits.maxStoredBytes: root and state together) and the filesystem's free-space
// reserve (limits.minFreeBytes), counted while bytes arrive, for every protocol.
//
// How, cheaply and across concurrent sessions of the key: `state/quota/stored` holds the key's stored
// bytes (apparent sizes of the regular files in root and state, less the in-flight areas), found by a
// walk and then kept up to date by every publish and removal under `state/locks/quota.lock`. Each
// live session holds a claim, `state/quota/claim.<sid>`, for the bytes it has in flight (temporary
// uploads, rsync staging) rounded up by a step; a claim is granted under the lock only while stored +
// every live claim stays within the quota, so concurrent sessions can never together exceed it. A
// session claims again only when its bytes in flight pass its claim: one lock per STEP written, not
// one per WRITE. Claims of dead sessions are dropped by the next claimer.
//
// What the record cannot see: files removed or planted by root (prune, a restore by hand). So it is
// walked again when older than RECOUNT_MS (housekeeping runs hourly); until then a prune's freed
// space is not yet counted as free (fails closed), and a planted file is not yet counted. The walk
// costs one lstat per stored file, once an hour per key, under the lock.
// Sizes are apparent sizes (what the client sent; a sparse file counts whole), never st_blocks.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";
import type { Session } from "../session.js";
import { withLock, pidAlive } from "../lock.js";
import { showSize } from "../config/size.js";

const STEP = 8 * 1024 * 1024;
const RECOUNT_MS = 3600_000;
/** Areas of `state` whose bytes are in flight (claims count them), not stored. */
export const IN_FLIGHT = new Set(["tmp", "staging", "locks", "quota"]);
/** Every user of the quota lock waits this long before taking a holder to be stuck (a walk is slow). */
const LOCK_WAIT_MS = 60_000;

export class Quota {
  /** This session's bytes in flight. */
  private inflight = 0;
  /** What it may have in flight without asking again. */
  private claimed = 0;
  private readonly dir: string;
  private readonly claimFile: string;
  private readonly lockFile: string;

  constructor(private readonly session: Session) {
    const { state } = session.policy;
    this.dir = path.join(state, "quota");
    this.claimFile = path.join(this.dir, `claim.${session.sid}`);
    this.lockFile = path.join(state, "locks", "quota.lock");
  }

  private get limits() {
    return this.session.policy.limits;
  }

  /** n more bytes are about to arrive; throws QUOTA (and audits) past the quota or the reserve. */
  grow(n: number): void {
    if (n <= 0) return;
    if (this.inflight + n > this.claimed) this.claim(this.inflight + n);
    this.inflight += n;
  }

  /** n bytes in flight went away (an upload abandoned, staging removed): the claim shrinks with them. */
  shrink(n: number): void {
    if (n <= 0) return;
    this.inflight = Math.max(0, this.inflight - n);
    if (this.quotaBytes !== undefined && this.claimed > this.inflight) this.update(0);
  }

  /** rsync's staging tree below `dir` is measured (polled): what it holds is claimed like writes, or refused. */
  measureStaging(dir: string): void {
    const total = treeBytes(dir);
    if (total > this.inflight) this.grow(total - this.inflight);
    else this.shrink(this.inflight - total);
  }

  /** A file of `size` bytes was published: from in flight to stored. */
  stored(size: number): void {
    this.inflight = Math.max(0, this.inflight - size);
    if (this.quotaBytes !== undefined) this.update(size);
  }

  /** The claim down to what is in flight, and `added` bytes more stored, in one turn of the lock. */
  private update(added: number): void {
    this.claimed = Math.min(this.claimed, this.inflight);
    withLock(this.lockFile, () => {
      if (added) this.writeStored(this.readStored() + added);
      this.writeClaim();
    }, LOCK_WAIT_MS);
  }

  /** A stored file of `size` bytes was removed by its session. */
  removed(size: number): void {
    if (this.quotaBytes === undefined) return;
    withLock(this.lockFile, () => this.writeStored(Math.max(0, this.readStored() - size)), LOCK_WAIT_MS);
  }

  /** Bytes this key may still add (statvfs), given the free bytes of its filesystem: within the reserve and the quota. */
  room(freeBytes: number): number {
    const free = Math.max(0, freeBytes - this.limits.minFreeBytes);
    if (this.quotaBytes === undefined) return free;
    const used = withLock(this.lockFile, () => this.readStored() + this.otherClaims(), LOCK_WAIT_MS) + this.inflight;
    return Math.max(0, Math.min(free, this.quotaBytes - used));
  }

  /** End of session: the claim goes. */
  close(): void {
    try {
      fs.unlinkSync(this.claimFile);
    } catch {
      /* none */
    }
  }

  private get quotaBytes(): number | undefined {
    return this.limits.maxStoredBytes;
  }

  private claim(want: number): void {
    const free = freeBytes(this.session.policy.state);
    // What this session may still write without running into the reserve.
    const byReserve = this.inflight + free - this.limits.minFreeBytes;
    if (want > byReserve)
      this.refuse(
        this.limits.minFreeBytes
          ? `the filesystem keeps ${showSize(this.limits.minFreeBytes)} free (${showSize(Math.max(0, free))} free now): upload refused, nothing stored was touched`
          : `the filesystem is full (${showSize(Math.max(0, free))} free): upload refused, nothing stored was touched`,
      );
    const quota = this.quotaBytes;
    // A claim is held against the other sessions: small against the quota, so that they can share it.
    let grant = Math.min(want + (quota === undefined ? STEP : Math.min(STEP, Math.ceil(quota / 64))), byReserve);
    if (quota !== undefined) {
      withLock(this.lockFile, () => {
        const room = quota - this.readStored() - this.otherClaims();
        if (want > room) this.refuse(`quota of ${showSize(quota)} for this key reached (${showSize(Math.max(0, quota - room))} stored or arriving): upload refused, nothing stored was touched`);
        grant = Math.min(grant, room);
        this.claimed = grant;
        this.writeClaim();
      }, LOCK_WAIT_MS);
    } else this.claimed = grant;
  }

  private refuse(message: string): never {
    this.session.audit.event("quota", { anomaly: true, code: "QUOTA", reason: message, inflight: this.inflight });
    throw new VbError("QUOTA", message);
  }

  private writeClaim(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(this.claimFile, String(this.claimed), { mode: 0o600 });
  }

  /** Claims of the other live sessions; those of dead ones are removed. Under the lock. */
  private otherClaims(): number {
    let sum = 0;
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return 0;
    }
    for (const n of names) {
      const m = /^claim\.(\d+)-[0-9a-f]+$/.exec(n);
      if (!m || n === `claim.${this.session.sid}`) continue;
      const p = path.join(this.dir, n);
      if (!pidAlive(Number(m[1]))) {
        try {
          fs.unlinkSync(p);
        } catch {
          /* gone */
        }
        continue;
      }
      const v = Number(readOr(p, "0"));
      if (Number.isFinite(v) && v > 0) sum += v;
    }
    return sum;
  }

  /** The stored figure, walked again when missing, unreadable or older than RECOUNT_MS. Under the lock. */
  private readStored(): number {
    const p = path.join(this.dir, "stored");
    try {
      const rec = JSON.parse(fs.readFileSync(p, "utf8")) as { bytes?: unknown; walked?: unknown };
      if (typeof rec.bytes === "number" && typeof rec.walked === "number" && Date.now() - rec.walked < RECOUNT_MS && Date.now() >= rec.walked) return rec.bytes;
    } catch {
      /* walk */
    }
    const { root, state } = this.session.policy;
    const bytes = treeBytes(root) + treeBytes(state, IN_FLIGHT);
    this.writeStored(bytes, Date.now());
    return bytes;
  }

  private writeStored(bytes: number, walked?: number): void {
    const p = path.join(this.dir, "stored");
    let at = walked;
    if (at === undefined)
      try {
        at = (JSON.parse(fs.readFileSync(p, "utf8")) as { walked: number }).walked;
      } catch {
        at = 0;
      }
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // Written aside and renamed over: a reader never sees half a record.
    fs.writeFileSync(`${p}.${this.session.sid}`, JSON.stringify({ bytes, walked: at }), { mode: 0o600 });
    fs.renameSync(`${p}.${this.session.sid}`, p);
  }
}

function readOr(p: string, dflt: string): string {
  try {
    return fs.readFileSync(p, "utf8");
  } catch {
    return dflt;
  }
}

/** Free bytes for an unprivileged writer on the filesystem holding p. */
export function freeBytes(p: string): number {
  const f = fs.statfsSync(p);
  return f.bavail * f.bsize;
}

/** Apparent sizes of the regular files below dir, never following a link; `skip`: top-level names left out. */
export function treeBytes(dir: string, skip: ReadonlySet<string> = new Set()): number {
  let sum = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0; // unreadable (a sealed directory of another group): not counted
  }
  for (const e of entries) {
    if (skip.has(e.name)) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sum += treeBytes(p);
    else if (e.isFile())
      try {
        sum += fs.lstatSync(p).size;
      } catch {
        /* gone meanwhile */
      }
  }
  return sum;
}
