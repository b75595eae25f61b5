// PLACEHOLDER until the SFTP server lands.
import { VbError } from "../errors.js";
export async function serveSftp(): Promise<number> {
  throw new VbError("NOT_ALLOWED", "sftp: not yet supported by this version of validate-backup");
}
