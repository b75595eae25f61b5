// The one access rule (src/gate/access.ts), as a table: every `access` x `pull` setting x class of
// operation, and the three places that ask it (the gate, the SFTP request table, the vault) must
// answer as the table says.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { sandbox, type Sandbox, type Teardownable } from "./helpers/env.js";
import { T, PF, u32, str, attrs, decodeReply, describe } from "./helpers/sftp-client.js";
import { permits, type Access, type Verdict } from "../src/gate/access.js";
import { parseCommand } from "../src/gate/command.js";
import { decide } from "../src/gate/decide.js";
import { loadConfig } from "../src/config/load.js";
import { openAudit } from "../src/audit/log.js";
import { newSid, newCounters } from "../src/session.js";
import { ensureState } from "../src/vault/state.js";
import { Vault } from "../src/vault/vault.js";
import { Sftp } from "../src/sftp/server.js";

const METADATA = "duplicity-full.20250101T000000Z.manifest.gpg";
const VOLUME = "duplicity-full.20250101T000000Z.vol1.difftar.gpg";

// Written out by hand, not derived: this is what README.md promises.
const EXPECTED: [access: string, pull: boolean | "metadata", look: Verdict, pull: Verdict, write: Verdict][] = [
  ["read-only", true, "yes", "yes", "no"],
  ["read-only", "metadata", "yes", "yes", "no"],
  ["read-only", false, "yes", "yes", "no"],
  ["append-only", true, "yes", "yes", "yes"],
  ["append-only", "metadata", "yes", "metadata", "yes"],
  ["append-only", false, "yes", "no", "yes"],
];
const CLASSES: Access[] = ["look", "pull", "write"];

// One request of each class per asker; `name` is the file a pull reads.
const GATE: Record<Access, (name: string) => string> = { look: () => "ls -1 .", pull: (n) => `scp -f ${n}`, write: () => "scp -t new.gpg" };

function sftpRequest(s: Sftp, access: Access, name: string): string {
  const id = u32(7);
  const pkt: Record<Access, Buffer> = {
    look: Buffer.concat([Buffer.from([T.LSTAT]), id, str(".")]),
    pull: Buffer.concat([Buffer.from([T.OPEN]), id, str(name), u32(PF.READ), attrs()]),
    write: Buffer.concat([Buffer.from([T.MKDIR]), id, str("newdir"), attrs()]),
  };
  const reply = Buffer.concat([s.handle(pkt[access])].flat());
  return describe(decodeReply(reply.subarray(4)));
}

function vaultAllows(vault: Vault, access: Access, name: string): boolean {
  try {
    if (access === "look") vault.lstat(vault.resolve("."));
    else if (access === "pull") return vault.canRead(vault.resolve(name));
    else vault.mkdir(vault.resolve("newdir"));
    return true;
  } catch {
    return false;
  }
}

function openSession(t: Teardownable, sb: Sandbox): { vault: Vault; sftp: Sftp } {
  const policy = loadConfig(sb.config);
  ensureState(policy.state);
  const audit = openAudit(policy.audit.file, path.join(policy.state, "locks", "audit.lock"), { label: policy.label, sid: "test", client: "local" });
  const session = { sid: newSid(), policy, audit, rootReal: fs.realpathSync(policy.root), counters: newCounters() };
  const vault = new Vault(session);
  const sftp = new Sftp(session, vault);
  t.teardown(() => {
    sftp.close();
    vault.close();
  });
  sftp.handle(Buffer.concat([Buffer.from([T.INIT]), u32(3)]));
  return { vault, sftp };
}

for (const [access, pull, ...verdicts] of EXPECTED) {
  t.test(`access ${access}, pull ${pull}`, async (t) => {
    const sb = sandbox(t, { files: { [METADATA]: "m", [VOLUME]: "v" }, config: { access, pull } });
    const policy = loadConfig(sb.config);
    for (const [i, cls] of CLASSES.entries()) {
      const want = verdicts[i]!;
      t.equal(permits(policy, cls), want, `permits ${cls}`);
      // "metadata": the volume may not be read, the manifest may; the gate lets both through.
      const names = want === "metadata" ? [[VOLUME, false], [METADATA, true]] as const : [[VOLUME, want === "yes"]] as const;
      for (const [name, allowed] of names) {
        const { vault, sftp } = openSession(t, sb);
        let gate: string;
        try {
          gate = decide(parseCommand(GATE[cls](name)), policy).kind;
        } catch (e) {
          gate = `refused ${(e as { code: string }).code}`;
        }
        t.equal(gate.startsWith("refused"), want === "no", `gate, ${cls} ${name}: ${gate}`);
        if (want === "no") t.equal(gate, `refused ${cls === "write" ? "READ_ONLY" : "NOT_ALLOWED"}`, `gate code, ${cls}`);
        const reply = sftpRequest(sftp, cls, name);
        t.equal(!reply.startsWith("PERMISSION_DENIED"), allowed, `sftp, ${cls} ${name}: ${reply}`);
        fs.rmSync(path.join(sb.root, "newdir"), { recursive: true, force: true });
        t.equal(vaultAllows(vault, cls, name), allowed, `vault, ${cls} ${name}`);
        fs.rmSync(path.join(sb.root, "newdir"), { recursive: true, force: true });
      }
    }
  });
}
