// The sandbox of a pulling rsync. `rsync --server --sender` reads the client's filter list from the
// protocol, and rsync has no server option to refuse merge rules in it: a `merge /etc/…` rule (or a
// `dir-merge` naming an absolute file in an ancestor of the transfer) makes it open that file, and
// the file's lines become rules the client can probe. So rsync runs where nothing but /usr and what
// the key may pull exists: a user and mount namespace of the account's own (unprivileged; no setuid
// helper), a tmpfs root with read-only binds, chroot, no capabilities. jail-entry.ts builds it.
// Fail closed: where no namespace can be made, a pull is refused (SFTP and scp are our own code).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { VbError } from "../errors.js";
import { JAIL_TOOLS, JAIL_ENV, READY, type JailSpec } from "./jail-spec.js";

export { JAIL_TOOLS, type JailSpec };

/** Next to this module both in the bundle (dist/app/) and in tsc's output. */
const ENTRY = fileURLToPath(new URL("./jail-entry.js", import.meta.url));
/** What is kept of the messages before rsync starts: enough for a cause, bounded whatever is said. */
const KEEP = 2048;

/** The command that runs spec.argv in the sandbox: an unprivileged namespace, then jail-entry.js. */
export function jailCommand(spec: JailSpec, node = process.execPath): string[] {
  return [JAIL_TOOLS.unshare, "--user", "--map-current-user", "--mount", "--keep-caps", "--", node, "--no-warnings", "--", ENTRY, JSON.stringify(spec)];
}

/**
 * What the sandbox said before rsync started: jail-entry's report on fd 3, and anything on stderr
 * (unshare's own refusal comes there). Until "ready" the stderr lines are held back from the client.
 */
export class JailReport {
  private report = "";
  private early = "";

  get ready(): boolean {
    return this.report === READY;
  }

  onReport(chunk: string): void {
    if (this.report.length < KEEP) this.report += chunk;
  }

  /** Held back while the sandbox is not up; returns the lines to pass on once it is. */
  hold(line: string): string | null {
    if (this.ready) return line;
    if (this.early.length < KEEP) this.early += `${line}\n`;
    return null;
  }

  held(): string {
    return this.early;
  }

  /** Why no rsync ran; exit is the sandbox command's. */
  cause(exit: number): string {
    const said = (s: string) => s.replace(/\s+/g, " ").trim().slice(0, KEEP);
    if (this.report) return said(this.report);
    return `no user namespace could be made for it: ${said(this.early) || `${JAIL_TOOLS.unshare} exited with ${exit}`}`;
  }
}

export function jailRefusal(cause: string): VbError {
  return new VbError(
    "NOT_ALLOWED",
    `rsync pulls are refused on this host: rsync runs in a sandbox that keeps it from reading outside the root, and it could not be built (${cause}); pull with SFTP or scp instead`,
  );
}

/** Build the sandbox and run spec.argv in it, waiting (check: does it work on this host?); as uid/gid when given. */
export function probeJail(spec: JailSpec, as?: { uid: number; gid: number }): { ok: true } | { ok: false; cause: string } {
  const argv = jailCommand(spec);
  const prefix = as ? [JAIL_TOOLS.setpriv, `--reuid=${as.uid}`, `--regid=${as.gid}`, "--clear-groups", "--"] : [];
  const all = [...prefix, ...argv];
  const r = spawnSync(all[0]!, all.slice(1), { env: JAIL_ENV, cwd: "/", encoding: "utf8", stdio: ["ignore", "pipe", "pipe", "pipe"], timeout: 60_000 });
  const report = new JailReport();
  report.onReport(String(r.output?.[3] ?? ""));
  for (const l of String(r.stderr ?? "").split("\n")) if (l) report.hold(l);
  if (r.error) return { ok: false, cause: r.error.message };
  if (!report.ready) return { ok: false, cause: report.cause(r.status ?? -1) };
  if (r.status !== 0) return { ok: false, cause: `${spec.argv.join(" ")} exited with ${r.status} in the sandbox: ${String(r.stderr).trim()}` };
  return { ok: true };
}
