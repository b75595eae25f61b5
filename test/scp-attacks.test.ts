// The scp family of conformance/attacks.md (19-21), plus the policy rules (read-only, pull: false,
// protocol off): refused at the gate before any protocol starts. A few cases per item go through the
// real binary (exit, stderr, audit, nothing changed anywhere: see helpers/refusal.ts); every variant
// is also checked in-process for the exact reason. Last, items 19 and 20 with the input a client
// would send after the command, asserting only that each is refused somehow and changes nothing.
import t from "tap";
import { item, type Case } from "./helpers/refusal.js";
import { gateReasons, scpClient } from "./helpers/scp-wire.js";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, auditLines } from "./helpers/env.js";
import { localTree } from "./helpers/rsync-client.js";
import { finishedFull } from "./helpers/duplicity.js";

const OPTION = /scp option '-.' is not allowed \(only -t, -f, -r, -p, -d and -v\)/;
const OUTSIDE = /outside the backup root/;
const reasons = (title: string, cases: Array<[string, RegExp]>, config?: Record<string, unknown>) => gateReasons(t, title, cases, config);

const through = (cases: Array<[string, RegExp]>, input = "C0644 5 y\nhello\0"): Case[] => cases.map(([command, reason]) => ({ command, reason, input }));

const options: Array<[string, RegExp]> = [
  ["scp -S /bin/sh -t x", OPTION],
  ["scp -o ProxyCommand=/bin/sh -t x", OPTION],
  ["scp '-oProxyCommand=sh -c id' -t x", OPTION],
  ["scp -oPKCS11Provider=./x.so -t x", OPTION],
  ["scp -F cfg -t x", OPTION],
  ["scp -3 -t x", OPTION],
  ["scp -P 2222 -f x", OPTION],
  ["scp -i key -t x", OPTION],
  ["scp -J jump -t x", OPTION],
  ["scp -l 10 -t x", OPTION],
  ["scp -c aes128-ctr -t x", OPTION],
  ["scp -T -f x", OPTION],
  ["scp -tS/bin/sh x", OPTION],
  ["scp -q -t x", OPTION],
  ["scp --help", /scp option '--' is not allowed/],
  ["scp x y", /scp without -t or -f/],
  ["scp -t -f x", /-t and -f cannot be combined/],
  ["scp -t", /scp -t needs a path/],
  ["scp -t a b", /scp -t takes exactly one target, got 2 words/],
  ["scp -t ''", /scp: empty path/],
];
item(t, 19, "scp options that run programs or feed ssh (CVE-2007-6415, CVE-2019-1000018)", {
  strict: "exact",
  cases: through(options.slice(0, 2)),
  more: options.map(([c]) => c),
});
reasons("19", options);

const paths: Array<[string, RegExp]> = [
  ["scp -t ../x", /'\.\.\/x': outside the backup root/],
  ["scp -t /etc", /'\/etc': outside the backup root/],
  ["scp -t -- ../x", OUTSIDE],
  ["scp -t ../home/.ssh", OUTSIDE],
  ["scp -f /etc/passwd", OUTSIDE],
  ["scp -f d/../../x", OUTSIDE],
  ["scp -r -f ../outside", OUTSIDE],
  ["scp -f d/x ../outside/canary.txt", OUTSIDE],
  ["scp -f '../outside/*'", OUTSIDE],
  ["scp -f /srv/vb/rootx/a", OUTSIDE],
  ["scp -f ~/.ssh/authorized_keys", /shell syntax '~'/],
];
item(t, 20, "scp paths out of the root", {
  strict: "exact",
  cases: [...through(paths.slice(0, 1)), { command: "scp -f d/../../x", reason: OUTSIDE, input: "\0\0\0" }],
  more: paths.map(([c]) => c),
});
reasons("20", paths);

reasons("21", [
  ["borg serve", /'borg' is not allowed/],
  ["git-upload-pack x", /'git-upload-pack' is not allowed/],
  ["svnserve -t", /'svnserve' is not allowed/],
  ["cvs server", /'cvs' is not allowed/],
  ["unison -server", /'unison' is not allowed/],
  ["/usr/bin/scp -t x", /'\/usr\/bin\/scp' is not allowed/],
]);

const readOnly: Array<[string, RegExp]> = [["scp -t d", /read-only: this key cannot upload \(scp -t refused\)/]];
item(t, 18, "read-only: no scp upload", { strict: "exact", cases: through(readOnly), config: { access: "read-only" } });
reasons("read-only", readOnly, { access: "read-only" });

const noPull: Array<[string, RegExp]> = [["scp -f a.gpg", /reading \(scp -f\) is disabled for this key \(pull: false\)/]];
item(t, 18, "pull: false: no scp download", { strict: "exact", cases: through(noPull, "\0\0\0"), config: { pull: false } });
reasons("pull: false", noPull, { pull: false });

reasons("scp off", [["scp -r -t d", /scp is disabled for this key/], ["scp -f a", /scp is disabled/]], { protocols: ["sftp"] });

// ---- items 19 and 20 with a client's input: refused, however
const sending = (input: string, ...commands: string[]): Case[] => commands.map((command) => ({ command, input }));
const UPLOAD = "C0644 5 y\nhello\0";
item(t, 19, "scp options that run programs (CVE-2007-6415, CVE-2019-1000018)", {
  strict: "protocol",
  cases: [...sending(UPLOAD, "scp -S /bin/sh -t x", "scp '-oProxyCommand=sh -c id' -t x", "scp -oPKCS11Provider=./x.so -t x", "scp -F cfg -t x"), { command: "scp -3 a b" }],
});

item(t, 20, "scp paths out of the root", {
  strict: "protocol",
  cases: [
    ...sending("C0644 5 x\nhello\0", "scp -t ../x", "scp -t /etc"),
    ...sending("C0644 5 authorized_keys\nhello\0", "scp -t ../home/.ssh"),
    ...sending("\0\0\0", "scp -f /etc/passwd", "scp -f d/../../x", "scp -f ../outside/canary.txt"),
  ],
});

// ---- issue 16, item 4: a D line obeys the name rules of a file (real scp -O -r)
t.test("16.4: scp -r cannot make a directory under a backup file's name (it would finish a set or break prune)", async (t) => {
  const sb = sandbox(t);
  const { at, future } = finishedFull(sb);
  const names = [`duplicity-inc.${at(0)}.to.${at(1)}.manifest.gpg`, `duplicity-full.${future}.vol1.difftar.gpg`, "df.k3x9.m"];
  const src = localTree(t, Object.fromEntries(names.map((n) => [`tree/${n}/inside.gpg`, "inside\n"])));
  const before = snapshotAll(sb);
  const r = await scpClient(sb, ["-r", ...names.map((n) => `tree/${n}`), "host:h/"], src);
  t.not(r.code, 0, "scp reports the refusals");
  t.match(r.stderr, /named like a backup file, never a directory/);
  t.match(r.stderr, /in the future/);
  t.match(r.stderr, /not a name duplicity 0\.8 writes/);
  t.same(snapshotAll(sb), before, "nothing changed, inside or outside the root");
  for (const n of names) t.notOk(fs.existsSync(path.join(sb.root, "h", n)), `${n}: no such directory`);
  t.equal(auditLines(sb).filter((l) => l.event === "refused").length, names.length, "each refusal audited");
});
