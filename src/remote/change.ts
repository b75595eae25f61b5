// The contracts of the install plan's steps: what one deviation is (Change) and what every step's
// inspection may ask about the account (Ctx).
import { lookupUser, lookupGroup, groupsOf } from "./system.js";
import type { Who } from "./fsops.js";

export interface Change {
  what: string;
  /** A command (or instruction) for a person. */
  fix: string;
  /** Absent: the installer cannot do it by itself. */
  do?: () => void;
  /** Worth saying, but nothing to change: not counted, not a failure of check. */
  warn?: boolean;
}

export class Ctx {
  private cache: { uid: number; gid: number; who: Who } | null | undefined;
  /** Paths whose step changed something in this run. */
  readonly changed = new Set<string>();
  constructor(
    readonly user: string,
    readonly group: string,
    /** sshd's effective settings for the account, or why they could not be read. */
    readonly sshd: Map<string, string> | string | undefined,
  ) {}

  /** The account's ids; null while it does not exist (a dry run before creation). */
  ids(): { uid: number; gid: number; who: Who } | null {
    if (this.cache === undefined) {
      const acct = lookupUser(this.user);
      const g = lookupGroup(this.group);
      this.cache = acct && g ? { uid: acct.uid, gid: g.gid, who: { uid: acct.uid, gids: new Set(groupsOf(this.user)) } } : null;
    }
    return this.cache;
  }
  forget(): void {
    this.cache = undefined;
  }
}
