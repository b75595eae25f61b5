// sshd's side: the per-account drop-in, its validation and reload, and the effective settings for
// the account as sshd itself computes them (`sshd -T -C`), which is what check judges.
import fs from "node:fs";
import path from "node:path";
import { tool, TOOLS } from "./system.js";
import { VbError } from "../errors.js";

export const DEFAULT_SSHD_CONFIG = "/etc/ssh/sshd_config";

export function dropinPath(sshdConfig: string, user: string): string {
  return path.join(path.dirname(sshdConfig), "sshd_config.d", `validate-backup-${user}.conf`);
}

/** Settings the drop-in pins for the account, also the values check expects (lower-case, as sshd -T prints). */
export const DROPIN: [string, string][] = [
  ["PasswordAuthentication", "no"],
  ["KbdInteractiveAuthentication", "no"],
  ["AuthenticationMethods", "publickey"],
  ["DisableForwarding", "yes"],
  ["PermitTTY", "no"],
  ["PermitUserRC", "no"],
];

/** How the drop-in begins: remove-key takes out only a file that starts so. */
export function dropinMark(user: string): string {
  return `# validate-backup: the backup account ${user} `;
}

export function dropinContent(user: string): string {
  return [
    `${dropinMark(user)}gets public keys only, no forwarding, no terminal.`,
    "# Written by validate-backup install-remote --sshd-dropin; edits are overwritten on the next run.",
    `Match User ${user}`,
    ...DROPIN.map(([k, v]) => `\t${k} ${v}`),
    "",
  ].join("\n");
}

/** sshd -t: the whole configuration (with the drop-in) parses. */
export function validate(config: string): void {
  const r = tool("sshd", ["-t", "-f", config]);
  if (r.status !== 0) throw new VbError("BAD_REQUEST", `sshd -t -f ${config} refused the configuration: ${r.stderr.trim() || `exit ${r.status}`}`);
}

/** Effective settings for a login of `user` from 127.0.0.1, or the reason they cannot be read. */
export function effective(config: string, user: string): Map<string, string> | string {
  const r = tool("sshd", ["-T", "-f", config, "-C", `user=${user},host=localhost,addr=127.0.0.1`]);
  if (r.status !== 0) return (r.stderr.trim() || `${TOOLS.sshd} -T exited ${r.status}`).split("\n")[0]!;
  const out = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const i = line.indexOf(" ");
    if (i > 0) {
      const k = line.slice(0, i);
      out.set(k, out.has(k) ? `${out.get(k)} ${line.slice(i + 1)}` : line.slice(i + 1));
    }
  }
  return out;
}

/** Ask the running sshd (found by its pid file) to reload; it is fine for none to run here. */
export function reload(config: string, user: string): string {
  const settings = effective(config, user);
  const pidfile = typeof settings === "string" ? "/run/sshd.pid" : (settings.get("pidfile") ?? "/run/sshd.pid");
  let pid: number;
  try {
    pid = Number.parseInt(fs.readFileSync(pidfile, "utf8"), 10);
  } catch {
    return `sshd is not running (no ${pidfile}): the drop-in applies when it starts`;
  }
  let exe = "";
  try {
    exe = fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return `sshd is not running (stale ${pidfile}): the drop-in applies when it starts`;
  }
  // A stale pid file may name another program by now: only an sshd gets the signal.
  if (exe !== TOOLS.sshd && path.basename(exe) !== "sshd") return `${pidfile} names pid ${pid}, which is not sshd (${exe}): not signalled; reload sshd by hand`;
  process.kill(pid, "SIGHUP");
  return `sshd (pid ${pid}) reloaded`;
}
