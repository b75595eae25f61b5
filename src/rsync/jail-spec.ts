// What the pull sandbox's two halves share: jail.ts (in the session) and jail-entry.ts (in the
// namespace, its own bundle). A leaf: node's modules only.

/** Absolute paths of the util-linux tools the sandbox is built with (Debian: util-linux, mount). */
export const JAIL_TOOLS = {
  unshare: "/usr/bin/unshare",
  mount: "/usr/bin/mount",
  setpriv: "/usr/bin/setpriv",
} as const;

export const JAIL_ENV = { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" };

/** jail-entry's word on fd 3 when the sandbox stands and rsync is about to start. */
export const READY = "ready";

export interface JailSpec {
  /** An empty directory of the session's own: the tmpfs of the new root is mounted on it. */
  newRoot: string;
  /** What rsync may read: real absolute paths, bound read-only (and noexec) at the same path. */
  binds: string[];
  /** Working directory of rsync, inside the new root. */
  cwd: string;
  /** rsync's argv, its absolute path first. */
  argv: string[];
}
