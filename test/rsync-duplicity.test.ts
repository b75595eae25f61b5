// duplicity's rsync backend command lines (conformance/clients.md), driven by the real rsync
// client: list, put and get work; delete is refused; a re-sent volume fails loudly.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, auditLines } from "./helpers/env.js";
import { rsyncClient, localTree, leftovers, lastSession } from "./helpers/rsync-client.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

t.test("duplicity's rsync backend: list, put and get work; delete is refused", async (t) => {
  const sb = sandbox(t);
  const vol = "duplicity-full.20240101T000000Z.vol1.difftar.gpg";
  const manifest = "duplicity-full.20240101T000000Z.manifest.gpg";
  const local = localTree(t, { [vol]: "volume one\n", [manifest]: "manifest\n" });
  const abs = sb.root;

  // put: rsync <file> host:/abs/path/<file>
  let r = await rsyncClient(sb, [path.join(local, vol), `h:${abs}/${vol}`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(lastSession(sb)[0]?.command, `rsync --server -e.LsfxCIvu . ${abs}/${vol}`);
  t.equal(fs.readFileSync(path.join(sb.root, vol), "utf8"), "volume one\n");
  // duplicity writes the manifest last, which finishes the set.
  r = await rsyncClient(sb, [path.join(local, manifest), `h:${abs}/${manifest}`]);
  t.equal(r.code, 0, r.stderr);

  // list: rsync host:/abs/path/
  r = await rsyncClient(sb, [`h:${abs}/`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(lastSession(sb)[0]?.command, `rsync --server --sender -de.LsfxCIvu . ${abs}/`);
  t.match(r.stdout.toString(), /duplicity-full\.20240101T000000Z\.manifest\.gpg/);
  t.match(r.stdout.toString(), /duplicity-full\.20240101T000000Z\.vol1\.difftar\.gpg/);

  // get: rsync host:/abs/path/<file> <local>
  const back = localTree(t);
  r = await rsyncClient(sb, [`h:${abs}/${vol}`, path.join(back, "restored")]);
  t.equal(r.code, 0, r.stderr);
  t.equal(lastSession(sb)[0]?.command, `rsync --server --sender -e.LsfxCIvu . ${abs}/${vol}`);
  t.equal(fs.readFileSync(path.join(back, "restored"), "utf8"), "volume one\n");

  // delete: an empty directory pushed with --delete
  const empty = localTree(t);
  const before = snapshotAll(sb);
  r = await rsyncClient(sb, ["--recursive", "--delete", `${empty}/`, `h:${abs}/`]);
  t.not(r.code, 0);
  t.equal(lastSession(sb)[0]?.command, `rsync --server -re.iLsfxCIvu --delete . ${abs}/`);
  t.match(lastSession(sb)[0], { decision: "deny", reason: /'--delete' is refused/ });
  t.same(snapshotAll(sb), before);

  // put of a name that exists (duplicity resuming with re-encrypted bytes): a loud failure.
  fs.writeFileSync(path.join(local, vol), "volume one, encrypted again\n");
  r = await rsyncClient(sb, [path.join(local, vol), `h:${abs}/${vol}`]);
  t.not(r.code, 0);
  t.match(r.stderr, /validate-backup: .*'duplicity-full\.20240101T000000Z\.vol1\.difftar\.gpg' (already exists|was not stored)/);
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
  t.ok(auditLines(sb).every((l) => l.event !== "anomaly"));
});
