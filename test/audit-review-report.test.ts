// `audit` on a log written by real sessions shows every refusal with its reason and client; on a
// synthetic history it finds bursts of refusals, new client addresses, flagged lines and gaps.
import t from "tap";
import fs from "node:fs";
import { BIN, run, sandbox, runGate } from "./helpers/env.js";
import { Reviewer, parseSince, parseAge, BURST_COUNT } from "../src/audit/review.js";
import { render } from "../src/audit/render.js";

const auditCmd = (args: string[]) => run([BIN, "audit", ...args], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });

t.test("a log from real sessions", async (t) => {
  const sb = sandbox(t);
  const refused = ["ls; rm -rf ~", "bash -c id", "rsync --server --daemon ."];
  for (const c of [...refused, "true", undefined]) await runGate(sb, c);
  const text = await auditCmd(["--file", sb.audit]);
  t.equal(text.code, 0, text.stderr);
  const out = text.stdout.toString();
  t.match(out, /chain intact, no recorded head/);
  t.match(out, /Sessions per key\n +KEY +SESSIONS +DENIED .*\n +test +5 +4 /);
  t.match(out, /Refusals \(4\)/);
  for (const c of refused) t.ok(out.includes(`[${c}]`), `refusal of ${c} listed`);
  t.match(out, /127\.0\.0\.1 +command +NOT_ALLOWED +no command given: interactive logins and shells are refused/);
  t.match(out, /Anomalies \(1\)\n.*KIND.*\n.*upload gap +no upload at all in the log/);

  const denied = await auditCmd(["--config", sb.config, "--denied"]);
  t.notMatch(denied.stdout.toString(), /Sessions per key|Anomalies/);
  t.match(denied.stdout.toString(), /Refusals \(4\)/);

  const json = await auditCmd(["--file", sb.audit, "--json"]);
  const r = JSON.parse(json.stdout.toString());
  t.equal(r.refusals.length, 4);
  t.match(r.refusals[0], { label: "test", client: "127.0.0.1", code: "NOT_ALLOWED", what: "ls; rm -rf ~", reason: /shell syntax '~' is refused/ });
  t.match(r.keys, [{ label: "test", sessions: 5, denied: 4 }]);

  const later = await auditCmd(["--file", sb.audit, "--since", "2999-01-01", "--json"]);
  t.same(JSON.parse(later.stdout.toString()).refusals, [], "--since leaves earlier lines out");
});

t.test("anomalies in a synthetic history", async (t) => {
  const day = 86_400_000;
  const t0 = Date.parse("2026-03-01T02:00:00Z");
  const iso = (ms: number) => new Date(ms).toISOString();
  const rv = new Reviewer(undefined, parseAge("26h")!, t0 + 10 * day);
  const base = { label: "home", client: "192.0.2.1" };
  rv.line({ ...base, time: iso(t0), event: "request", decision: "allow" });
  rv.line({ ...base, time: iso(t0 + 1000), event: "publish", path: "a.gpg", size: 1000 });
  rv.line({ ...base, time: iso(t0 + day), event: "publish", path: "b.gpg", size: 2000 });
  for (let i = 0; i < BURST_COUNT + 1; i++)
    rv.line({ ...base, client: "203.0.113.9", time: iso(t0 + 2 * day + i * 60_000), event: "request", decision: "deny", code: "NOT_ALLOWED", reason: "no", command: "id" });
  rv.line({ ...base, time: iso(t0 + 3 * day), event: "version-kept", anomaly: true, path: "c.vol3.difftar.gpg", reason: "replaced" });
  rv.line({ ...base, time: iso(t0 + 5 * day), event: "publish", path: "c.gpg", size: 10 });
  const r = rv.finish([]);
  t.same(
    r.anomalies.map((a) => a.kind),
    ["new client", "refusal burst", "flagged", "upload gap", "upload gap"],
  );
  t.match(r.anomalies[0]!.detail, /first session from 203\.0\.113\.9 \(known: 192\.0\.2\.1\)/);
  t.match(r.anomalies[1]!.detail, new RegExp(`${BURST_COUNT + 1} refusals from 203\\.0\\.113\\.9`));
  t.match(r.anomalies[2]!.detail, /version-kept: replaced: c\.vol3\.difftar\.gpg/);
  t.match(r.anomalies[3]!.detail, /no upload for 4\.0 days/);
  t.match(r.anomalies[4]!.detail, /no upload for 5\.0 days, until now/);
  t.same(
    r.days.map((d) => [d.day, d.files, d.bytes]),
    [
      ["2026-03-01", 1, 1000],
      ["2026-03-02", 1, 2000],
      ["2026-03-06", 1, 10],
    ],
  );
  t.match(render(r, false), /Uploads per day\n +DAY +KEY +FILES +BYTES\n +2026-03-01 +home +1 +1000 B/);
  t.equal(parseSince("2d", t0), t0 - 2 * day);
  t.equal(parseSince("2026-03-01", 0), Date.parse("2026-03-01"));
  t.equal(parseSince("soon", 0), null);
});

t.test("root's own runs (seal, prune, verify --stored) are no client of the key and no anomaly", async (t) => {
  const sb = sandbox(t);
  await runGate(sb, "true");
  for (const args of [["seal"], ["prune", "--keep-full", "2"], ["verify", "--stored"]]) {
    const r = await run([BIN, ...args, "--config", sb.config], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });
    t.not(r.code, null, `${args[0]} ran: ${r.stderr}`);
  }
  const logged = fs.readFileSync(sb.audit, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { client?: string });
  t.ok(logged.some((l) => l.client === "root"), "root's runs wrote lines of their own");
  const json = await auditCmd(["--file", sb.audit, "--json"]);
  const r = JSON.parse(json.stdout.toString());
  t.same(r.keys.map((k: { clients: string[] }) => k.clients), [["127.0.0.1"]], "the key's clients: its sessions' address only");
  t.same(r.anomalies.filter((a: { kind: string }) => a.kind === "new client"), [], "no 'new client: root'");
});
