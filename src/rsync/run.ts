// PLACEHOLDER until the rsync gate lands.
import { VbError } from "../errors.js";
export async function runRsync(): Promise<number> {
  throw new VbError("NOT_ALLOWED", "rsync: not yet supported");
}
