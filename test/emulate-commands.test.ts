// duplicity's paramiko+scp backend runs `mkdir -p '<dir>'`, `ls -1 '<dir>'` and `rm '<dir>/<file>'`.
// We answer the first two ourselves (no shell, no program) inside the root and refuse rm.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, auditLines, type Sandbox } from "./helpers/env.js";
import { gateReasons, gate } from "./helpers/scp-wire.js";
import { sample } from "./helpers/scale.js";
import { finishedFull } from "./helpers/duplicity.js";

// Each gate() is a whole session (a node start, ~1-3 s on CI's two cores): the quick scale sends a
// sample through the binary. gateReasons decides the syntax and path refusals in-process at every
// scale; those that depend on the tree (a planted link, a file in the way, a missing name) are
// checked through the binary only, so the quick scale checks some of them and the full run all.

async function refusedAll(t: Test, sb: Sandbox, cases: Array<[string, RegExp]>): Promise<void> {
  const before = snapshotAll(sb);
  for (const [command, why] of sample(cases, 2)) {
    const r = await gate(sb, command);
    t.not(r.code, 0, `${command}: non-zero exit`);
    t.match(r.stderr, why, `${command}: the reason`);
    t.equal(r.stdout.length, 0, `${command}: nothing listed`);
    const line = auditLines(sb).find((l) => (l.event === "request" && l.command === command && l.decision === "deny") || (l.event === "error" && why.test(String(l.reason))));
    t.ok(line, `${command}: audited`);
  }
  t.same(snapshotAll(sb), before, "no side effect");
}

t.test("mkdir -p as duplicity sends it, with odd names and absolute paths inside the root", async (t) => {
  const sb = sandbox(t, { files: { "existing/a.gpg": "A" } });
  const cases: Array<[string, string]> = [
    ["mkdir -p 'backups/host one'", "backups/host one"],
    ["mkdir -p 'it'\\''s/x'", "it's/x"],
    ["mkdir -p \"quoted \\\"dir\\\"\"", 'quoted "dir"'],
    [`mkdir -p '${sb.root}/abs/deep'`, "abs/deep"],
    ["mkdir -p existing", "existing"],
    ["mkdir -p 'existing'", "existing"],
    ["mkdir plain", "plain"],
    ["mkdir -p -- -dash", "-dash"],
    [`mkdir -p '${sb.root}'`, "."],
  ];
  for (const [command, made] of sample(cases)) {
    const r = await gate(sb, command);
    t.equal(r.code, 0, `${command}: ${r.stderr}`);
    t.ok(fs.statSync(path.join(sb.root, made)).isDirectory(), `${command} -> ${made}`);
  }
  t.equal(fs.readFileSync(path.join(sb.root, "existing/a.gpg"), "utf8"), "A");
  t.equal(fs.statSync(path.join(sb.root, "abs")).mode & 0o7777, 0o750);
  t.ok(auditLines(sb).some((l) => l.event === "mkdir" && l.path === "backups/host one"));
  const r = await gate(sb, "mkdir plain");
  t.equal(r.code, 1, "plain mkdir of an existing directory fails, like mkdir");
  t.match(r.stderr, /'plain': already exists/);
});

const OUTSIDE = /outside the backup root/;
gateReasons(t, "mkdir", [
  ["mkdir -p ../x", /'\.\.\/x': outside the backup root/],
  ["mkdir -p /tmp/vb-evil", OUTSIDE],
  ["mkdir -p 'd/../../x'", OUTSIDE],
  ["mkdir -p /srv/vb/root/../x", OUTSIDE],
  ["mkdir -m 4777 x", /mkdir: option '-m' is not allowed \(allowed: -p, --parents\)/],
  ["mkdir -p -m 777 x", /option '-m' is not allowed/],
  ["mkdir --mode=777 x", /option '--mode=777' is not allowed/],
  ["mkdir -pv x", /option '-pv' is not allowed/],
  ["mkdir -p x -v", /option '-v' is not allowed/],
  ["mkdir -Z x", /option '-Z' is not allowed/],
  ["mkdir -p a b", /takes exactly 1 path\(s\), got 2/],
  ["mkdir -p", /takes exactly 1 path\(s\), got 0/],
  ["mkdir -p ''", /mkdir: empty path/],
  ["mkdir -p x; rm -rf /", /shell operator ';'/],
]);
gateReasons(t, "mkdir, read-only", [["mkdir -p newdir", /read-only: this key cannot create directories \(mkdir refused\)/]], { access: "read-only" });

t.test("mkdir: outside the root, through a link, into a file — refused, nothing made", async (t) => {
  const sb = sandbox(t, { files: { "d/f.gpg": "F" } });
  fs.symlinkSync(sb.outside, path.join(sb.root, "out"));
  await refusedAll(t, sb, [
    ["mkdir -p ../x", /'\.\.\/x': outside the backup root/],
    ["mkdir -m 4777 x", /option '-m' is not allowed/],
    ["mkdir -p out/new", /'out': exists and is not a directory/],
    ["mkdir -p out", /'out': exists and is not a directory/],
    ["mkdir -p d/f.gpg/x", /'d\/f\.gpg': exists and is not a directory/],
  ]);
  t.notOk(fs.existsSync(path.join(sb.outside, "new")));
  sb.configure({ access: "read-only" });
  await refusedAll(t, sb, [["mkdir -p newdir", /read-only: this key cannot create directories \(mkdir refused\)/]]);
});

t.test("ls -1 lists names one per line, sorted, without dot files", async (t) => {
  const sb = sandbox(t, {
    files: { "b/duplicity-full.vol2.difftar.gpg": "2", "b/duplicity-full.vol10.difftar.gpg": "10", "b/.hidden": "h", "b/Zeta": "z", "b/sub/x": "x", "b/with space": "s", "b/it's": "q", "plain.gpg": "p" },
  });
  fs.symlinkSync(sb.outside, path.join(sb.root, "b/link"));
  const before = snapshotAll(sb);
  const expected = ["Zeta", "duplicity-full.vol10.difftar.gpg", "duplicity-full.vol2.difftar.gpg", "it's", "link", "sub", "with space"].join("\n") + "\n";
  for (const command of sample(["ls -1 'b'", "ls b", `ls -1 '${sb.root}/b'`, "ls -1 -- b/"], 2)) {
    const r = await gate(sb, command);
    t.equal(r.code, 0, `${command}: ${r.stderr}`);
    t.equal(r.stdout.toString(), expected, command);
  }
  let r = await gate(sb, "ls -1 'b/it'\\''s'");
  t.equal(r.stdout.toString(), "b/it's\n", "a file operand is echoed, as ls does");
  r = await gate(sb, "ls -1");
  t.equal(r.stdout.toString(), "b\nplain.gpg\n", "no operand: the root");
  t.ok(auditLines(sb).some((l) => l.event === "list" && l.path === "b" && l.entries === 7));
  t.same(snapshotAll(sb), before, "listing changes nothing");
});

gateReasons(t, "ls", [
  ["ls -1 ..", /'\.\.': outside the backup root/],
  ["ls -1 /etc", OUTSIDE],
  ["ls -1 'b/../..'", OUTSIDE],
  ["ls -la b", /ls: option '-la' is not allowed \(allowed: -1\)/],
  ["ls -a b", /option '-a' is not allowed/],
  ["ls -1 -R b", /option '-R' is not allowed/],
  ["ls --color=always b", /option '--color=always' is not allowed/],
  ["ls -1 b b", /takes 0 to 1 path\(s\), got 2/],
  ["ls -1 b | sh", /shell operator '\|'/],
]);

t.test("ls: outside the root, through a link, missing — refused", async (t) => {
  const sb = sandbox(t, { files: { "b/x": "x" } });
  fs.symlinkSync(sb.outside, path.join(sb.root, "link"));
  await refusedAll(t, sb, [
    ["ls -1 ..", /'\.\.': outside the backup root/],
    ["ls -la b", /option '-la' is not allowed/],
    ["ls -1 link/sub", /'link\/sub': .*(symbolic link|not a directory)/],
    ["ls -1 missing", /'missing': no such file or directory/],
  ]);
});

const RM = /append-only: files cannot be removed \(rm refused\)/;
gateReasons(t, "rm", [["rm 'b/x'", RM], ["rm -f b/x", RM], ["rm -rf /", RM], ["rm", RM], ["rm -- -x", RM]]);
gateReasons(t, "rm, read-only", [["rm b/x", /read-only: files cannot be removed \(rm refused\)/]], { access: "read-only" });
gateReasons(t, "scp off", [["ls -1 b", /scp is disabled for this key/], ["mkdir -p b", /scp is disabled for this key/], ["rm b/x", /scp is disabled/]], { protocols: ["sftp", "rsync"] });

t.test("rm is refused and the file stays", async (t) => {
  const sb = sandbox(t, { files: { "b/duplicity-full.manifest.gpg": "M" } });
  await refusedAll(t, sb, [["rm 'b/duplicity-full.manifest.gpg'", /^validate-backup: append-only: files cannot be removed \(rm refused\)$/m]]);
  t.match(auditLines(sb).find((l) => l.command === "rm 'b/duplicity-full.manifest.gpg'"), { decision: "deny", code: "IMMUTABLE" });
});

t.test("16.4: mkdir -p refuses a backup file's name as a directory, at any depth; existing directories stay usable", async (t) => {
  const sb = sandbox(t);
  const { at, future } = finishedFull(sb);
  await refusedAll(t, sb, [
    [`mkdir -p 'h/duplicity-inc.${at(0)}.to.${at(1)}.manifest.gpg'`, /named like a backup file, never a directory/],
    [`mkdir -p 'h/duplicity-full.${future}.manifest.gpg/x'`, /in the future/],
    [`mkdir 'h/duplicity-full.${at(0)}.vol7.difftar.gpg'`, /adds to a finished backup set/],
    ["mkdir -p h/dfs.abc.st", /not a name duplicity 0\.8 writes/],
  ]);
  const r = await gate(sb, "mkdir -p h/sub");
  t.equal(r.code, 0, r.stderr);
});
