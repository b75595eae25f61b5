// A bad config refuses the session: the message names the key and the fault, the client is told,
// the audit log (when its path can be read from the config) records the denial, nothing changes.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, runGate, auditLines, type Sandbox } from "./helpers/env.js";
import { PUSH } from "./helpers/refusal.js";
import { sample } from "./helpers/scale.js";
import { parseConfig } from "../src/config/load.js";

const COMMAND = `${PUSH} . d/`;

async function badConfig(t: Test, sb: Sandbox, write: () => void, why: RegExp, audited = true): Promise<void> {
  write();
  const before = snapshotAll(sb);
  const seen = auditLines(sb).length;
  const r = await runGate(sb, COMMAND);
  t.not(r.code, 0, "refused");
  t.match(r.stderr, /^validate-backup: config /, "the client is told it is the config");
  t.match(r.stderr, why, "the message names the key and the fault");
  const lines = auditLines(sb).slice(seen);
  if (audited) {
    t.match(lines, [{ event: "request", decision: "deny", reason: why, command: COMMAND, client: "127.0.0.1" }], "audited once, as deny");
    t.equal(`validate-backup: ${lines[0]?.reason}\n`, r.stderr, "the audit has what the client was told");
  } else t.same(lines, [], "nothing could be audited");
  t.same(snapshotAll(sb), before, "nothing changed");
}

t.test("schema faults name the key", async (t) => {
  const sb = sandbox(t, { files: { "d/existing.gpg": "old\n" } });
  const base = JSON.parse(fs.readFileSync(sb.config, "utf8")) as Record<string, unknown>;
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["unknown top-level key", { ...base, rooot: "/x" }, /key '\(top level\)': unknown key\(s\) 'rooot'/],
    ["unknown nested key", { ...base, limits: { sesions: 3 } }, /key 'limits': unknown key\(s\) 'sesions'/],
    ["unknown key under audit", { ...base, audit: { ...(base.audit as object), rotate: true } }, /key 'audit': unknown key\(s\) 'rotate'/],
    ["wrong type", { ...base, access: 5 }, /key 'access'/],
    ["wrong enum", { ...base, access: "append" }, /key 'access'/],
    ["wrong nested type", { ...base, limits: { sessions: "4" } }, /key 'limits\.sessions'/],
    ["unknown protocol", { ...base, protocols: ["ftp"] }, /key 'protocols\.0'/],
    ["boolean as string", { ...base, pull: "yes" }, /key 'pull'/],
    ["relative root", { ...base, root: "backup/root" }, /key 'root': must be an absolute path/],
    ["root with ..", { ...base, root: `${sb.root}/../outside` }, /key 'root': must be normalized/],
    ["state inside root", { ...base, state: `${sb.root}/state` }, /key 'state': must lie outside 'root'/],
    ["root inside state", { ...base, state: path.dirname(sb.root) }, /key 'state': must lie outside 'root'/],
    ["audit log inside root", { ...base, audit: { file: `${sb.root}/audit.log` } }, /key 'audit\.file': must lie outside 'root'/],
  ];
  // Every fault is checked in-process; the quick scale (CI) sends a sample through the binary.
  for (const [name, config, why] of cases) t.throws(() => parseConfig(JSON.stringify(config), sb.config), { message: why }, `${name}: refused by the schema`);
  for (const [name, config, why] of sample(cases))
    await t.test(name, (t) => badConfig(t, sb, () => fs.writeFileSync(sb.config, JSON.stringify(config)), why, !name.startsWith("audit log")));
});

t.test("filesystem faults name the key", async (t) => {
  const sb = sandbox(t);
  await badConfig(t, sb, () => sb.configure({ root: path.join(sb.dir, "missing") }), /key 'root': .*missing is not usable \(ENOENT\)/);
  await badConfig(t, sb, () => sb.configure({ root: path.join(sb.outside, "canary.txt") }), /key 'root': .* is not a directory/);
  await badConfig(t, sb, () => sb.configure({ state: path.join(sb.dir, "missing.state") }), /key 'state': .*missing\.state is not usable \(ENOENT\)/);
});

t.test("not JSON, or no config at all", async (t) => {
  const sb = sandbox(t);
  await badConfig(t, sb, () => fs.writeFileSync(sb.config, '{"root": '), /not valid JSON/, false);
  await badConfig(t, sb, () => fs.rmSync(sb.config), /cannot be read \(ENOENT\)/, false);
});
