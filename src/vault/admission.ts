// What the vault admits, whichever protocol brought it (vault.admit), and the one mode policy for
// what it stores.
import type { VPath } from "./paths.js";

/**
 * Stored files: owner read and write always (the key can fetch its file back, as scp and rsync
 * always let it), group read if asked, never setuid, setgid, sticky or executable: 0600 or 0640.
 */
export function fileMode(requested: number): number {
  return (requested & 0o640) | 0o600;
}

/** Directories: the owner can always list, enter and add (0700), group r-x if asked, no special bits. */
export function dirMode(requested: number): number {
  return (requested & 0o750) | 0o700;
}

/** A finished file waiting to appear under its name. */
export interface Arrival {
  /** The file, open; its owner closes it. */
  readonly fd: number;
  readonly v: VPath;
  readonly size: number;
  /** The path link(2) takes it from (in `state`). */
  readonly src: string;
  /** The mode the client asked for; what is stored is fileMode(mode). */
  readonly mode: number;
  readonly times?: { atime: number; mtime: number };
  /** Bytes of it not yet counted against the session's limit (an upload counts them as they arrive). */
  readonly uncounted: number;
  /** Its SHA-256, when hashed as it arrived; otherwise read back from fd. */
  readonly sha256?: () => string;
  /** The filesystem was flushed since the file was complete: no fsync of its own. */
  readonly synced?: boolean;
  /**
   * An upload's parent directory, opened when the upload started (the vault takes the descriptor
   * over), and the inode the checks then allowed it to replace. Absent: the vault opens the parent
   * and checks now.
   */
  readonly dir?: { fd: number; replaces: string | undefined };
  /** For the audit line. */
  readonly via?: string;
  /** The vault removed the name `src` when it published the file: its owner need not. */
  readonly srcGone?: () => void;
}

export interface Published {
  path: string;
  size: number;
  sha256: string;
}
