// The upload guardrail through the vault API: plaintext, a message encrypted only with a
// passphrase, one encrypted to another key, and a valid one. Only the last is stored; every
// refusal says "refused: …", is audited, and leaves nothing behind (no file, no temporary file).
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { sandbox, snapshotAll, auditLines, type Sandbox, type Teardownable } from "./helpers/env.js";
import { gpgHome, type Gpg } from "./helpers/pgp.js";
import { loadConfig } from "../src/config/load.js";
import { openAudit } from "../src/audit/log.js";
import { newSid, newCounters, type Session } from "../src/session.js";
import { ensureState } from "../src/vault/state.js";
import { Vault } from "../src/vault/vault.js";
import { prepareGuard } from "../src/pgp/guard.js";

async function openVault(t: Teardownable, sb: Sandbox): Promise<Vault> {
  const policy = loadConfig(sb.config);
  ensureState(policy.state);
  const audit = openAudit(policy.audit.file, path.join(policy.state, "locks", "audit.lock"), { label: policy.label, sid: "test", client: "local" });
  const session: Session = { sid: newSid(), policy, audit, rootReal: fs.realpathSync(policy.root), counters: newCounters() };
  await prepareGuard(policy);
  const vault = new Vault(session);
  t.teardown(() => vault.close());
  return vault;
}

/** Upload `bytes` as `name`, in two writes, the second half first when `backwards`. */
function put(vault: Vault, name: string, bytes: Buffer, backwards = false): void {
  const up = vault.create(vault.resolve(name));
  const half = Math.floor(bytes.length / 2);
  const parts: [Buffer, number][] = [
    [bytes.subarray(0, half), 0],
    [bytes.subarray(half), half],
  ];
  for (const [b, at] of backwards ? parts.reverse() : parts) up.write(b, at);
  up.commit();
}

function samples(g: Gpg) {
  const plain = Buffer.from("tar of the home directory\n".repeat(1000));
  return {
    plain,
    symmetric: g.gpg(["--passphrase", "pw", "-c"], plain),
    stranger: g.gpg(["-r", g.otherFpr, "-e"], plain),
    hidden: g.gpg(["-r", g.fpr, "--throw-keyids", "-e"], plain),
    valid: g.gpg(["-r", g.fpr, "-u", g.fpr, "-s", "-e"], plain),
    armored: g.gpg(["-r", g.fpr, "-e", "--armor"], plain),
    detached: g.gpg(["-u", g.fpr, "--detach-sign"], plain),
  };
}

// One key pair and one set of samples for the whole file: gpg is slow to start.
const g = gpgHome(t);
const s = samples(g);

t.test("with recipients: only a message to SOURCE's key (or a detached signature) is stored", async (t) => {
  const sb = sandbox(t, { files: { "old.gpg": "old\n" }, config: { encryption: { required: true, recipients: [g.pub] } } });
  const vault = await openVault(t, sb);
  const cases: [string, Buffer, RegExp][] = [
    ["home.tar", s.plain, /^refused: plaintext upload: 'home\.tar' \(not an OpenPGP message/],
    ["sym.gpg", s.symmetric, /^refused: not encrypted to an expected recipient: 'sym\.gpg' \(encrypted message .* to 1 passphrase; expected one of /],
    ["stranger.gpg", s.stranger, /^refused: not encrypted to an expected recipient: 'stranger\.gpg'/],
    ["hidden.gpg", s.hidden, /hidden recipients are refused \(encryption\.anonymousRecipients\)/],
  ];
  for (const [name, bytes, message] of cases) {
    const before = snapshotAll(sb);
    t.throws(() => put(vault, name, bytes), { name: "VbError", code: "NOT_ALLOWED", message }, name);
    t.same(snapshotAll(sb), before, `${name}: nothing changed`);
    t.match(auditLines(sb).at(-1), { event: "upload-refused", decision: "deny", code: "NOT_ALLOWED", path: name, reason: message }, `${name}: audited`);
  }
  t.same(fs.readdirSync(vault.tmp.dir).filter((n) => !vault.tmp.isOwn(n)), [], "no temporary file left");
  put(vault, "valid.gpg", s.valid);
  put(vault, "armored.asc", s.armored, true);
  put(vault, "valid.gpg.sig", s.detached);
  t.same(fs.readdirSync(sb.root).sort(), ["armored.asc", "old.gpg", "valid.gpg", "valid.gpg.sig"]);
  t.same(fs.readFileSync(path.join(sb.root, "valid.gpg")), s.valid);
  t.equal(auditLines(sb).filter((l) => l.event === "publish").length, 3);
});

t.test("hidden recipients are accepted when the config says so", async (t) => {
  const sb = sandbox(t, { config: { encryption: { required: true, recipients: [g.pub], anonymousRecipients: true } } });
  const vault = await openVault(t, sb);
  put(vault, "hidden.gpg", s.hidden);
  t.throws(() => put(vault, "sym.gpg", s.symmetric), { code: "NOT_ALLOWED" }, "a passphrase is still no recipient");
  t.same(fs.readdirSync(sb.root), ["hidden.gpg"]);
});

t.test("required without recipients: any encrypted message; not required: anything", async (t) => {
  const sb = sandbox(t, { config: { encryption: { required: true } } });
  const vault = await openVault(t, sb);
  put(vault, "sym.gpg", s.symmetric);
  put(vault, "stranger.gpg", s.stranger);
  t.throws(() => put(vault, "plain.txt", s.plain), { code: "NOT_ALLOWED", message: /^refused: plaintext upload/ });
  t.throws(() => put(vault, "empty", Buffer.alloc(0)), { message: /the file is empty/ });
  const off = sandbox(t);
  const open = await openVault(t, off);
  put(open, "plain.txt", s.plain);
  t.same(fs.readdirSync(off.root), ["plain.txt"]);
});

t.test("an unusable certificate refuses the session before any upload", async (t) => {
  const sb = sandbox(t, { config: { encryption: { required: true, recipients: ["/nonexistent/source.asc"] } } });
  await t.rejects(openVault(t, sb), { code: "BAD_REQUEST", message: /encryption\.recipients: \/nonexistent\/source\.asc is not a usable OpenPGP certificate/ });
});
