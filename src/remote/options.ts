// Option values install-remote and remove-key both take, judged alike: a key's label (it names the
// config file, the schedule files and the audit log) and an absolute path an administrator gives.
import path from "node:path";
import { VbError } from "../errors.js";
import { canonical } from "./fsops.js";

/** Where install-remote writes each key's config (--config-dir), remove-key takes it from, and status and metrics find the host's keys. */
export const CONFIG_DIR = "/etc/validate-backup";

export const LABEL = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

export function checkLabel(label: string): string {
  if (!LABEL.test(label)) throw new VbError("BAD_REQUEST", `--label '${label.slice(0, 40)}': letters, digits, '.', '_', '@', '-' (at most 64)`);
  return label;
}

/** --NAME's value, which must be absolute, with the symbolic links in its existing part resolved. */
export function absolute(name: string, p: string): string {
  if (!path.isAbsolute(p) || p.includes("\0")) throw new VbError("BAD_REQUEST", `--${name} must be an absolute path`);
  return canonical(p);
}
