// PLACEHOLDER until the rsync gate lands: refuses everything.
import { VbError } from "../errors.js";

export interface RsyncRequest {
  /** --sender: the client pulls (reads); otherwise it pushes into the tree. */
  sender: boolean;
  /** Server options to pass on, already checked against the table, in order. */
  options: string[];
  /** The path arguments as the client gave them (after the '.' placeholder). */
  paths: string[];
}

export function parseRsyncArgs(_args: string[]): RsyncRequest {
  throw new VbError("NOT_ALLOWED", "rsync: not yet supported");
}
