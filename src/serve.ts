// Serve mode: one SSH session. Load the policy, open the audit log, decide, run the plan, and
// close with one line that sums the session up. Every refusal is audited and told to the client.
import path from "node:path";
import fs from "node:fs";
import { VbError } from "./errors.js";
import { EXIT, toVbError, exitFor, type Context, type Handler } from "./handler.js";
import { loadConfig, checkPlaces } from "./config/load.js";
import type { Policy } from "./config/schema.js";
import { openAudit, type Audit } from "./audit/log.js";
import { judgeDenial, claimUnwritten } from "./audit/denials.js";
import { parseCommand } from "./gate/command.js";
import { decide, type Plan } from "./gate/decide.js";
import { newSid, newCounters, SESSION_LOCK_PREFIX, type Session } from "./session.js";
import { ensureState } from "./vault/state.js";
import type { Vault } from "./vault/vault.js";
import { tryLock, unlock } from "./lock.js";

// Protocol code is loaded only for the session that needs it: start-up time is paid per session.
const HANDLERS: { [K in Plan["kind"]]: () => Promise<Handler<K>> } = {
  true: async () => async () => EXIT.ok,
  sftp: async () => (await import("./sftp/serve.js")).serveSftp,
  rsync: async () => (await import("./rsync/run.js")).runRsync,
  scp: async () => (await import("./scp/run.js")).runScp,
  mkdir: async () => (await import("./emulate/mkdir.js")).runMkdir,
  ls: async () => (await import("./emulate/ls.js")).runLs,
};

async function run<K extends Plan["kind"]>(plan: Extract<Plan, { kind: K }>, kind: K, ctx: Context): Promise<number> {
  return (await HANDLERS[kind]())(plan, ctx);
}

/** After the session, replies still queued get this long to reach a client that may not read. */
const LINGER_MS = 10_000;

function say(message: string): void {
  // Straight to fd 2: process.stderr loads node's streams, ~5 ms of a refused command's start-up.
  // What a full non-blocking pipe (EAGAIN) or a short write leaves goes through process.stderr.
  const text = Buffer.from(`validate-backup: ${message}\n`);
  let done = 0;
  try {
    for (let n = 1; done < text.length && n > 0; done += n) n = fs.writeSync(2, text, done);
  } catch {
    /* below */
  }
  if (done < text.length) process.stderr.write(text.subarray(done));
}

/** The config could not be used: tell the client, and the audit log too if it names one that exists. */
function configError(configPath: string, e: Error, command: string | undefined, client: string): number {
  say(e.message);
  try {
    const json = JSON.parse(fs.readFileSync(configPath, "utf8")) as { audit?: { file?: unknown } };
    const file = json.audit?.file;
    if (typeof file === "string" && path.isAbsolute(file) && fs.existsSync(file))
      openAudit(file, undefined, { client }, false).event("request", { decision: "deny", reason: e.message, code: "CONFIG", command: command ?? null });
  } catch {
    /* nowhere to log: stderr has it */
  }
  return EXIT.config;
}

function takeSlot(policy: Policy): string | undefined {
  for (let i = 0; i < policy.limits.sessions; i++) {
    const f = path.join(policy.state, "locks", `${SESSION_LOCK_PREFIX}${i}`);
    if (tryLock(f)) return f;
  }
  return undefined;
}

export async function serve(configPath: string, env: NodeJS.ProcessEnv): Promise<number> {
  const command = env.SSH_ORIGINAL_COMMAND;
  const client = (env.SSH_CLIENT ?? "").split(" ")[0] || "local";
  let policy: Policy;
  let rootReal: string;
  try {
    policy = loadConfig(configPath);
  } catch (e) {
    return configError(configPath, e as Error, command, client);
  }
  const sid = newSid();
  const audit: Audit = openAudit(policy.audit.file, path.join(policy.state, "locks", "audit.lock"), { label: policy.label, sid, client });
  // Fail closed: nothing is served that the log does not record. Until the opening line is written
  // that means refusing the session; after it, a line that fails ends the session at once (end()).
  let end: ((why: string) => never) | undefined;
  audit.whenBroken((why) => {
    if (end) end(why);
    say(`refused: the audit log cannot be written (${why})`);
    process.exit(EXIT.config);
  });
  /** Refuse the session; `byClient`: a denial a client can repeat at will, held to judgeDenial's rate. */
  const deny = (e: unknown, byClient = false): number => {
    const err = toVbError(e);
    const line = (fields: object) => audit.event("request", { decision: "deny", code: err.code, reason: err.message, command: command ?? null, ...fields });
    (byClient ? judgeDenial : claimUnwritten)(path.join(policy.state, "locks"), line);
    say(err.message);
    return exitFor(err);
  };
  try {
    ({ rootReal } = checkPlaces(policy));
    ensureState(policy.state);
  } catch (e) {
    return deny(e);
  }
  let plan: Plan;
  try {
    plan = decide(parseCommand(command), policy);
  } catch (e) {
    return deny(e, true);
  }
  const slot = plan.kind === "true" ? undefined : takeSlot(policy);
  if (plan.kind !== "true" && !slot) return deny(new VbError("QUOTA", `too many concurrent sessions for this key (limit ${policy.limits.sessions})`), true);
  // The first line of a session that is let in brings the denials a flood left only counted (audit/denials.ts).
  claimUnwritten(path.join(policy.state, "locks"), (fields) => audit.event("request", { decision: "allow", command, plan: plan.kind, ...fields }));

  const session: Session = { sid, policy, audit, rootReal, counters: newCounters() };
  let vault: Vault | undefined;
  let exit: number = EXIT.failed;
  let finished = false;
  const finish = (code: number, why?: string) => {
    if (finished) return;
    finished = true;
    try {
      vault?.close();
    } finally {
      if (slot) unlock(slot);
    }
    audit.event("session-end", { ...session.counters, exit: code, ...audit.budget.counts(), ...(why ? { reason: why } : {}) });
  };
  end = (why) => {
    const message = `the audit log cannot be written (${why}): session ended, nothing more is served`;
    say(message);
    try {
      session.lastWords?.(message);
      finish(EXIT.failed, message); // uploads in progress abandoned; published names synced
    } finally {
      process.exit(EXIT.failed);
    }
  };
  const lifetime = setTimeout(() => {
    say(`session lifetime of ${policy.limits.sessionSeconds} s reached`);
    finish(EXIT.timeout, "session lifetime reached");
    process.exit(EXIT.timeout);
  }, policy.limits.sessionSeconds * 1000);
  lifetime.unref();
  for (const sig of ["SIGTERM", "SIGHUP", "SIGINT"] as const)
    process.once(sig, () => {
      finish(EXIT.failed, `killed by ${sig}`);
      process.exit(EXIT.failed);
    });
  try {
    // The vault and the guard are loaded only for a session that is served: a refusal pays for neither.
    if (plan.kind !== "true") vault = new (await import("./vault/vault.js")).Vault(session);
    if (vault && !vault.readOnly) await (await import("./pgp/guard.js")).prepareGuard(policy); // loads openpgp only if recipients are configured
    exit = await run(plan, plan.kind, { session, vault: vault as Vault });
  } catch (e) {
    const err = toVbError(e);
    say(err.message);
    audit.event("error", { code: err.code, reason: err.message });
    exit = exitFor(err);
  }
  clearTimeout(lifetime);
  finish(exit);
  // What a client did not read (it stalled, or the session ended on an error) would keep the process
  // alive as long as the client stays connected: stdout cannot be closed in Node, only left by exit.
  if (process.stdout.writableLength > 0) setTimeout(() => process.exit(exit), LINGER_MS).unref();
  return exit;
}
