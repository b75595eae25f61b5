// Chain floods and pre-emption are anomalies (issue 16, item 2): what someone holding SOURCE's key
// uploads to make root's prune, or SOURCE's own next backups, work against the real ones, done
// through the real gate (OpenSSH sftp, legacy scp), then read back with `validate-backup audit`.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { BIN, FAKE_SSH, run, sandbox, auditLines } from "./helpers/env.js";
import { fullSet, incSet, ts, uploadSftp, exists } from "./helpers/duplicity.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";
import { Reviewer, type Anomaly } from "../src/audit/review.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const base = Date.UTC(2025, 0, 1);
const tiny = Buffer.from([0x8c, 0x01, 0x00]); // a 3-byte OpenPGP packet: passes encryption.required's first look
const auditCmd = (args: string[]) => run([BIN, "audit", ...args], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs: 120_000 });

t.test("through the gate: a flood of fake full chains, a tiny full set after a real one, an incremental whose start a fake took", async (t) => {
  const sb = sandbox(t);
  // A real full set in small/, then a fake complete one: a lone manifest.
  const real = fullSet(ts(base)).map((n): [string, Buffer] => [n, crypto.randomBytes(n.includes(".manifest") ? 300 : 40_000)]);
  await uploadSftp(t, sb, "small", [...real, [`duplicity-full.${ts(base + DAY)}.manifest.gpg`, tiny]]);
  // Three fake complete chains in flood/ within minutes.
  await uploadSftp(
    t,
    sb,
    "flood",
    [0, 1, 2].map((i): [string, Buffer] => [`duplicity-full.${ts(base + i * DAY)}.manifest.gpg`, tiny]),
  );
  // blocked/: a real full set, a fake incremental manifest from its end, then SOURCE's real incremental.
  const full = fullSet(ts(base)).map((n): [string, Buffer] => [n, crypto.randomBytes(1000)]);
  const fake = `duplicity-inc.${ts(base)}.to.${ts(base + HOUR)}.manifest.gpg`;
  const [vol, sig] = incSet(ts(base), ts(base + DAY));
  await uploadSftp(t, sb, "blocked", [...full, [fake, tiny], [vol!, crypto.randomBytes(1000)]], [vol!]);
  t.notOk(exists(path.join(sb.root, "blocked", vol!)), "the real incremental is refused (sftp)");
  // The same refusal through legacy scp.
  const local = path.join(sb.dir, "sig");
  fs.writeFileSync(local, crypto.randomBytes(500));
  const scp = await run(["scp", "-O", "-S", FAKE_SSH, local, `x:blocked/${sig}`], { env: sb.sshEnv }, { timeoutMs: 60_000 });
  t.not(scp.code, 0, "and through scp");
  t.notOk(exists(path.join(sb.root, "blocked", sig!)));
  // And through rsync (a directory push: the file is skipped, and the skip is audited).
  const other = `duplicity-inc.${ts(base)}.to.${ts(base + 2 * DAY)}.manifest.gpg`;
  const tree = localTree(t, { [other]: crypto.randomBytes(300) });
  const rs = await rsyncClient(sb, ["-a", `${tree}/`, "h:blocked/"]);
  t.notOk(exists(path.join(sb.root, "blocked", other)), `and through rsync (exit ${rs.code})`);

  const refused = auditLines(sb).filter((l) => l.blocked === "incremental-start-taken");
  t.same(refused.map((l) => l.event), ["refused", "refused", "skipped"], "each refusal's audit line says why, as a field (sftp, scp, rsync)");
  for (const l of refused) t.match(l, { anomaly: true, start: ts(base), takenBy: `duplicity-inc.${ts(base)}.to.${ts(base + HOUR)}` });

  const json = await auditCmd(["--config", sb.config, "--json"]);
  t.equal(json.code, 0, json.stderr);
  const anomalies = (JSON.parse(json.stdout.toString()) as { anomalies: Anomaly[] }).anomalies;
  const of = (kind: string) => anomalies.filter((a) => a.kind === kind);
  t.equal(of("chain flood").length, 1, "one flood");
  t.match(of("chain flood")[0], { label: "test", path: "flood", detail: /^3 complete full backups arrived for flood within 24 hours .*treat its key as stolen.*housekeeping\.retentionDays/ });
  t.equal(of("small full backup").length, 1, "one tiny full set");
  t.match(of("small full backup")[0], {
    path: "small",
    detail: new RegExp(`^the full backup small/duplicity-full\\.${ts(base + DAY)} is 3 B, under a tenth of the previous one, small/duplicity-full\\.${ts(base)} \\(\\d+\\.\\d KiB\\)\\. .*restore-test`),
  });
  t.equal(of("blocked incremental").length, 3, "every refused incremental");
  t.match(of("blocked incremental")[0], { detail: new RegExp(`its start ${ts(base)} is taken by duplicity-inc\\.${ts(base)}\\.to\\.${ts(base + HOUR)}\\. .*Make a full backup on SOURCE now`) });
  t.equal(of("flagged").length, 0, "not listed twice");

  const text = await auditCmd(["--config", sb.config]);
  const anomaliesText = text.stdout.toString().split(/^Anomalies/m)[1] ?? "";
  for (const kind of ["chain flood", "small full backup", "blocked incremental"]) t.match(anomaliesText, kind, `the text review lists the ${kind}`);
});

t.test("no anomaly: a full chain a day, a resumed volume counted once, a full set a little smaller", async (t) => {
  const rv = new Reviewer(undefined, 10 * DAY, base + 10 * DAY);
  const publish = (ms: number, p: string, size: number) => rv.line({ time: new Date(ms).toISOString(), label: "k", client: "c", event: "publish", path: p, size });
  for (let i = 0; i < 4; i++) {
    const T = ts(base + i * 25 * HOUR);
    const at = base + i * 25 * HOUR;
    publish(at, `h/duplicity-full.${T}.vol1.difftar.gpg`, 1000);
    if (i === 1) publish(at + 1, `h/duplicity-full.${T}.vol1.difftar.gpg`, 1000); // resumed: sent again
    publish(at + 2, `h/duplicity-full-signatures.${T}.sigtar.gpg`, 100);
    publish(at + 3, `h/duplicity-full.${T}.manifest.gpg`, i === 3 ? 5 : 10);
  }
  const kinds = rv.finish([]).anomalies.map((a) => a.kind);
  t.same(kinds, [], "nothing to look at");
  // Three within 24 hours, in another directory, seen before --since: the baseline, not reported.
  const late = new Reviewer(base + 100 * DAY, 10 * DAY, base + 10 * DAY);
  for (let i = 0; i < 3; i++) late.line({ time: new Date(base + i * HOUR).toISOString(), label: "k", client: "c", event: "publish", path: `x/duplicity-full.${ts(base + i * HOUR)}.manifest.gpg`, size: 3 });
  t.same(late.finish([]).anomalies.filter((a) => a.kind === "chain flood"), []);
});
