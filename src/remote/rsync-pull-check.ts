// check: will rsync pulls work on this host? A pulling rsync runs only inside its sandbox (an
// unprivileged user and mount namespace, rsync/jail.ts), and where none can be made every rsync
// pull is refused. So check builds the very sandbox a pull of each key would get, as the account,
// and runs `rsync --version` in it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../config/load.js";
import { probeJail } from "../rsync/jail.js";
import type { Account } from "./system.js";
import type { SourceLayout } from "./plan.js";
import type { Change } from "./change.js";

const FIX =
  "allow unprivileged user namespaces (sysctl user.max_user_namespaces above 0; Debian before 11: kernel.unprivileged_userns_clone=1; " +
  "Ubuntu 24.04: an AppArmor profile for /usr/bin/unshare, or kernel.apparmor_restrict_unprivileged_userns=0), or pull with SFTP or scp";

export function rsyncPullFindings(acct: Account, sources: SourceLayout[], notes: string[]): Change[] {
  const out: Change[] = [];
  for (const s of sources) {
    let policy;
    let root: string;
    try {
      policy = loadConfig(s.config);
      root = fs.realpathSync(policy.root);
    } catch {
      continue; // the config's own findings say why
    }
    if (!policy.protocols.includes("rsync") || policy.pull === false) continue;
    const newRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vb-check-jail-"));
    let r;
    try {
      fs.chownSync(newRoot, acct.uid, acct.gid);
      r = probeJail({ newRoot, binds: [root], cwd: root, argv: [policy.rsync.path, "--version"] }, acct);
    } finally {
      fs.rmdirSync(newRoot);
    }
    if (r.ok) notes.push(`key ${s.label}: rsync pulls run in their sandbox on this host`);
    else out.push({ what: `key ${s.label}: rsync pulls will be refused on this host: their sandbox cannot be built (${r.cause})`, fix: FIX, warn: true });
  }
  return out;
}
