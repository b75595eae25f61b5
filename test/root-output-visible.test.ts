// Root's terminal is safe (issue 18, item 6): a name with ESC and CR, uploaded through the gate or
// planted in the root, reaches the output of seal, prune, audit and verify --stored with those
// characters made visible (\x1b, \x0d), as the audit log writes them, never raw.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { sandbox, gateIds } from "./helpers/env.js";
import { SftpClient, FX } from "./helpers/sftp-client.js";
import { runRoot } from "./helpers/duplicity.js";

// ESC [2J clears the screen, OSC 0 sets the window title, CR lets the rest overwrite the line.
const EVIL = "evil\x1b[2J\x1b]0;pwned\x07\rok";
// Raw bytes a terminal acts on: C0 but newline, DEL, and C1 as UTF-8 (U+0080-U+009F).
const RAW = /[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]/;

t.test("seal, prune, audit and verify --stored print ESC and CR in names visibly", async (t) => {
  const sb = sandbox(t, { config: { housekeeping: { minAgeMinutes: 0 } } });
  const sftp = SftpClient.gate(sb);
  await sftp.init();
  await sftp.mkdir("h");
  t.match((await sftp.put(`h/${EVIL}.gpg`, "bytes\n")).status, { code: 0 }, "the gate stores the name (it is the client's)");
  await sftp.end();
  // A later session may not remove it (this one could: the file is its own): the refusal names it too.
  const again = SftpClient.gate(sb);
  await again.init();
  t.match((await again.remove(`h/${EVIL}.gpg`)).status, { code: FX.PERMISSION_DENIED }, "a later session's remove is refused");
  await again.end();
  t.equal(fs.readFileSync(path.join(sb.root, "h", `${EVIL}.gpg`), "utf8"), "bytes\n", "and the file stays");
  const { uid, gid } = gateIds();
  // Planted beside it, not through the gate: a FIFO seal will not touch and a file no upload recorded.
  execFileSync("mkfifo", [path.join(sb.root, "h", `${EVIL}.fifo`)]);
  fs.writeFileSync(path.join(sb.root, "h", `${EVIL}.planted`), "planted\n");
  for (const n of [`${EVIL}.fifo`, `${EVIL}.planted`]) fs.lchownSync(path.join(sb.root, "h", n), uid, gid);

  const outputs: Record<string, string> = {};
  for (const args of [["seal"], ["prune", "--keep-full", "1"], ["audit"], ["audit", "--json"], ["audit", "--denied"], ["verify", "--stored"]]) {
    const r = await runRoot(sb, args);
    const both = r.stdout.toString("latin1") + r.stderr;
    outputs[args.join(" ")] = both;
    t.notOk(RAW.test(r.stdout.toString("latin1")) || RAW.test(Buffer.from(r.stderr).toString("latin1")), `${args.join(" ")}: no raw control byte (exit ${r.code})`);
  }
  t.match(outputs["seal"], /evil\\x1b\[2J\\x1b\]0;pwned\\x07\\x0dok\.fifo/, "seal names the FIFO it left alone, visibly");
  t.match(outputs["audit"], /evil\\x1b\[2J/, "audit names the refused path visibly");
  t.match(outputs["audit --denied"], /evil\\x1b\[2J/, "audit --denied too");
  t.match(outputs["audit --json"], /evil\\\\x1b\[2J/, "audit --json too (the log's own escape, JSON-quoted)");
  t.match(outputs["verify --stored"], /evil\\x1b\[2J\\x1b\]0;pwned\\x07\\x0dok\.planted/, "verify --stored names the unrecorded file visibly");
});
