// The attack suites' one assertion: a command line is refused, audited, and changes nothing. Each
// attack item runs a few cases through the real binary (slow: one node start each) and all of its
// variants in-process through parseCommand + decide (fast), so a long list costs little.
import fs from "node:fs";
import path from "node:path";
import type { Test } from "tap";
import { sandbox, snapshot, snapshotAll, runGate, auditLines, type Sandbox, type Snap } from "./env.js";
import { sample } from "./scale.js";
import { cleanString } from "../../src/audit/sanitize.js";
import { parseCommand } from "../../src/gate/command.js";
import { decide } from "../../src/gate/decide.js";
import { parseConfig } from "../../src/config/load.js";
import { VbError } from "../../src/errors.js";

export const CAPS = "-vlogDtpre.iLsfxCIvu"; // what rsync 3.2+ sends for a push with -av
export const PUSH = `rsync --server ${CAPS}`;
export const PULL = `rsync --server --sender ${CAPS}`;

const FILES = { "d/existing.gpg": "old volume\n", "a.gpg": "A\n" };
// Bytes that must never reach the client: the sibling canary, the fake home's key, /etc/passwd.
const SECRETS = ["outside canary", "secret\n", "ssh-ed25519", "root:x:0:0"];

/**
 * How much of the refusal a case asserts. "exact": refused by the gate before anything runs (deny
 * line whose reason is what stderr says, no allow line). "rsync": a deny line; the wording is the rsync
 * gate's business. "protocol": scp is built elsewhere; refused somehow (a deny or an error line).
 */
export type Strictness = "exact" | "rsync" | "protocol";

export interface Case {
  command: string | undefined;
  reason?: RegExp;
  /** stdin for the session, e.g. the '\0' an scp source waits for before it sends. */
  input?: string;
}

/** Test names stay printable ASCII: a raw U+2028 would break the TAP stream itself. */
export function show(raw: string | undefined): string {
  if (raw === undefined) return "(unset)";
  const s = raw.length > 70 ? `${raw.slice(0, 70)}… (${raw.length} chars)` : raw;
  return s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The whole sandbox except the audit log (which must grow) and the state directory (checked apart). */
function everything(sb: Sandbox): Snap {
  const all = snapshot(sb.dir);
  const state = path.basename(sb.state);
  for (const k of Object.keys(all)) if (k === "." || k === path.basename(sb.audit) || k === state || k.startsWith(state + "/")) delete all[k];
  return all;
}

/** Temporary uploads and rsync staging must not outlive a session. */
function leftovers(sb: Sandbox): string[] {
  const out: string[] = [];
  for (const area of ["tmp", "staging"]) {
    const dir = path.join(sb.state, area);
    if (fs.existsSync(dir)) for (const n of fs.readdirSync(dir)) out.push(`${area}/${n}`);
  }
  return out;
}

export async function refused(t: Test, sb: Sandbox, c: Case, strict: Strictness): Promise<void> {
  const before = snapshotAll(sb);
  const beforeAll = everything(sb);
  const seen = auditLines(sb).length;
  const r = await runGate(sb, c.command, { input: c.input });
  const name = show(c.command);
  const logged = c.command === undefined ? null : cleanString(c.command);
  t.not(r.code, 0, `${name}: non-zero exit`);
  t.match(r.stderr, /^validate-backup: \S/, `${name}: says why on stderr`);
  if (c.reason) t.match(r.stderr, c.reason, `${name}: the reason`);
  const lines = auditLines(sb).slice(seen);
  const request = lines.find((l) => l.event === "request");
  t.match(request, { command: logged, client: "127.0.0.1", label: "test" }, `${name}: audit names command and client`);
  const deny = lines.find((l) => l.decision === "deny");
  if (strict === "protocol") t.ok(deny ?? lines.find((l) => l.event === "error"), `${name}: audit records the refusal`);
  else {
    t.match(deny, { event: "request", decision: "deny", reason: /\S/, command: logged }, `${name}: audited as deny`);
    if (c.reason) t.match(deny?.reason, c.reason, `${name}: audit reason`);
  }
  if (strict === "exact") {
    t.notOk(lines.some((l) => l.decision === "allow"), `${name}: never allowed`);
    const said = r.stderr.split("\n")[0]!.replace(/^validate-backup: /, "");
    t.equal(deny?.reason, cleanString(said), `${name}: audit reason is what the client was told`);
  }
  const out = r.stdout.toString("latin1");
  t.notOk(
    SECRETS.find((s) => out.includes(s)),
    `${name}: no secret on stdout`,
  );
  t.same(snapshotAll(sb), before, `${name}: root, sibling and ~/.ssh unchanged`);
  t.same(everything(sb), beforeAll, `${name}: nothing new anywhere in the sandbox`);
  t.same(leftovers(sb), [], `${name}: no temporary file left in state`);
}

const POLICY = (extra: Record<string, unknown>) =>
  parseConfig(JSON.stringify({ label: "test", root: "/srv/vb/root", audit: { file: "/srv/vb/audit.log" }, ...extra }), "/srv/vb/test.json");

/** In-process: parse + decide refuse it with a VbError. Only for what the gate itself refuses. */
export function refusedByGate(t: Test, command: string | undefined, config: Record<string, unknown> = {}): void {
  const policy = POLICY(config);
  t.throws(() => decide(parseCommand(command), policy), VbError, `${show(command)}: refused by parse + decide`);
}

export interface Item {
  strict: Strictness;
  /** Run through the real binary, one node start each. */
  cases: Array<Case | string | undefined>;
  /** Further variants, checked in-process only (skipped for "protocol": those may be refused later). */
  more?: string[];
  config?: Record<string, unknown>;
}

/** One attacks.md line item: its cases through the binary in one sandbox, its variants in-process. */
export function item(t: Test, n: number, title: string, it: Item): void {
  t.test(`${n}. ${title}`, async (t) => {
    const sb = sandbox(t, { files: FILES, config: it.config });
    const cases = it.cases.map((c) => (typeof c === "object" ? c : { command: c }));
    // Every case is decided in-process below; the quick scale (CI) runs a sample through the binary.
    for (const c of sample(cases)) await refused(t, sb, c, it.strict);
    if (it.strict !== "protocol") for (const c of [...cases.map((c) => c.command), ...(it.more ?? [])]) refusedByGate(t, c, it.config);
  });
}
