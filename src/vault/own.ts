// The files this session published: the only ones it may rename, remove or change (vault.ts).
//
// (device, inode) alone is not an identity. Once the file is gone (prune removes it as root while
// the session stays open), ext4 gives its inode number to the very next new file, which may be
// another session's real backup; the number would then let this session remove or rename that.
// So an own file is known by two things, of which a reused inode can match neither:
// - a descriptor, kept open for the MAX_PINNED most recent own files (the ones duplicity's .part
//   renames and restic's lock removals ask for). While it is open the inode cannot be freed, so no
//   other file can get its number: the same number under the name is the same file.
// - its birth time (statx btime), for the older ones. A reused inode is born after the old file was
//   freed, which is after its descriptor here was closed; a descriptor is closed only once its file
//   is at least MIN_AGE_MS old, so the new birth time is later by at least that much (kernel clock
//   ticks are milliseconds; only root setting the clock back could undo it).
// A file whose identity cannot be kept that way (a filesystem without birth times, a file evicted
// younger than MIN_AGE_MS, a descriptor that could not be opened) is forgotten: the session can no
// longer rename or remove it, which is the safe side. 100,000 published files cost 100,000 map
// entries and MAX_PINNED descriptors.
import fs from "node:fs";
import { closeQuietly, inodeKey } from "../fsat.js";

/** Own files kept open at once (oldest closed first): a bound on descriptors, not on files. */
export const MAX_PINNED = 64;
/** A birth time identifies a file only once its clock tick is well past: see above. */
export const MIN_AGE_MS = 1000;

/** Two stats of one name at two moments show the same file (not a reused inode number). */
export function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return inodeKey(a) === inodeKey(b) && a.birthtimeMs === b.birthtimeMs;
}

export class OwnFiles {
  /** inodeKey -> birth time in ms (0: the filesystem records none). */
  private readonly born = new Map<string, number>();
  /** inodeKey -> an open descriptor of that inode, in the order pinned (Map keeps it). */
  private readonly pins = new Map<string, number>();

  /**
   * `fd`: the published file, open; `st`: its fstat. The pin is a descriptor of our own, read-only:
   * the upload's own is writable, and a session that stays open for hours must not hold a writable
   * descriptor of a file it published (sealed meanwhile, or not), even one nothing writes through.
   */
  add(fd: number, st: fs.Stats): void {
    const key = inodeKey(st);
    this.forgetKey(key);
    let pin: number | undefined;
    try {
      // Through /proc: a new descriptor of the very inode fd refers to (Node has no dup(2)).
      pin = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY);
      if (inodeKey(fs.fstatSync(pin)) !== key) throw new Error("not the same inode");
    } catch {
      closeQuietly(pin);
      pin = undefined;
    }
    if (pin === undefined && !this.datable(st.birthtimeMs)) return; // cannot be told apart later
    this.born.set(key, st.birthtimeMs);
    if (pin === undefined) return;
    this.pins.set(key, pin);
    if (this.pins.size > MAX_PINNED) this.unpinOldest();
  }

  private datable(birthtimeMs: number): boolean {
    return birthtimeMs > 0 && Date.now() - birthtimeMs >= MIN_AGE_MS;
  }

  private unpinOldest(): void {
    const [key, pin] = this.pins.entries().next().value as [string, number];
    this.pins.delete(key);
    closeQuietly(pin);
    if (!this.datable(this.born.get(key) ?? 0)) this.born.delete(key);
  }

  /** Is `st` (an lstat of a name) a file this session published, and not another on its reused inode? */
  has(st: fs.Stats): boolean {
    const key = inodeKey(st);
    const born = this.born.get(key);
    if (born === undefined) return false;
    return this.pins.has(key) || (born > 0 && st.birthtimeMs === born);
  }

  forget(st: fs.Stats): void {
    this.forgetKey(inodeKey(st));
  }

  private forgetKey(key: string): void {
    closeQuietly(this.pins.get(key));
    this.pins.delete(key);
    this.born.delete(key);
  }

  /** End of session. */
  close(): void {
    for (const pin of this.pins.values()) closeQuietly(pin);
    this.pins.clear();
    this.born.clear();
  }
}
