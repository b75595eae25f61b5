// The rsync option table and parser, without running anything: what real clients send is
// accepted and passed on unchanged, everything the brief lists is refused with a reason.
import t from "tap";
import { parseRsyncArgs, LONG_OPTIONS, SHORT_OPTIONS, CAPABILITIES } from "../src/gate/rsync-args.js";
import { splitWords } from "../src/gate/command.js";
import { VbError } from "../src/errors.js";

const ROOT = "/srv/backup/host1";

function parse(line: string) {
  const [program, ...args] = splitWords(line);
  if (program !== "rsync") throw new Error("test lines start with rsync");
  return parseRsyncArgs(args, ROOT);
}

function refusal(line: string): string {
  try {
    parse(line);
  } catch (e) {
    if (e instanceof VbError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return "(accepted)";
}

// conformance/clients.md, plus what rsync 3.5 sent for common options (captured with a fake ssh).
const ACCEPTED: [string, { sender: boolean; options: string[]; paths: string[]; comps: string[][] }][] = [
  ["rsync --server -vlogDtpre.iLsfxCIvu --max-delete=-1 --ignore-existing . dest/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "--max-delete=-1", "--ignore-existing"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server -vlogDtprze.iLsfxCIvu . dest/", { sender: false, options: ["-vlogDtprze.iLsfxCIvu"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server --sender -vlogDtpre.iLsfxCIvu . src/", { sender: true, options: ["-vlogDtpre.iLsfxCIvu"], paths: ["src/"], comps: [["src"]] }],
  ["rsync --server --sender -de.LsfxCIvu . dest/", { sender: true, options: ["-de.LsfxCIvu"], paths: ["dest/"], comps: [["dest"]] }],
  [`rsync --server --sender -de.LsfxCIvu . ${ROOT}/`, { sender: true, options: ["-de.LsfxCIvu"], paths: [`${ROOT}/`], comps: [[]] }],
  [`rsync --server -e.LsfxCIvu . ${ROOT}/duplicity-full.20240101T000000Z.vol1.difftar.gpg`, { sender: false, options: ["-e.LsfxCIvu"], paths: [`${ROOT}/duplicity-full.20240101T000000Z.vol1.difftar.gpg`], comps: [["duplicity-full.20240101T000000Z.vol1.difftar.gpg"]] }],
  [`rsync --server --sender -e.LsfxCIvu . ${ROOT}/x.manifest.gpg`, { sender: true, options: ["-e.LsfxCIvu"], paths: [`${ROOT}/x.manifest.gpg`], comps: [["x.manifest.gpg"]] }],
  ["rsync --server -vlogDtpre.iLsfxCIvu . .", { sender: false, options: ["-vlogDtpre.iLsfxCIvu"], paths: ["."], comps: [[]] }],
  ["rsync --server -vlogDtpre.iLsfxCIvu . dest\\ dir/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu"], paths: ["dest dir/"], comps: [["dest dir"]] }],
  ["rsync --server -vlogDtprRe.iLsfxCIvu --log-format=%i --stats . dest/", { sender: false, options: ["-vlogDtprRe.iLsfxCIvu", "--log-format=%i", "--stats"], paths: ["dest/"], comps: [["dest"]] }],
  [
    "rsync --server -vlogDtprce.iLsfxCIvu --compress-level=3 --timeout=30 --bwlimit=1024 --checksum-choice=md5 . dest/",
    { sender: false, options: ["-vlogDtprce.iLsfxCIvu", "--compress-level=3", "--timeout=30", "--bwlimit=1024", "--checksum-choice=md5"], paths: ["dest/"], comps: [["dest"]] },
  ],
  ["rsync --server -vlogDtpre.iLsfxCIvu --size-only --fsync --mkpath . dest/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "--size-only", "--fsync", "--mkpath"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server -vlogDtpre.iLsfxCIvu --min-size=1 --max-size=10485760 . dest/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "--min-size=1", "--max-size=10485760"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server -vlogDtpre.iLsfxCIvu -B2048 -@-1 . dest/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "-B2048", "-@-1"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server --sender -vlogDtprze.iLsfxCIvu --skip-compress=gz --ignore-missing-args . dest/", { sender: true, options: ["-vlogDtprze.iLsfxCIvu", "--skip-compress=gz", "--ignore-missing-args"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server -lOogDtEre.iLsfxCIvu . dest/", { sender: false, options: ["-lOogDtEre.iLsfxCIvu"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server --sender -vlogDtpre.iLsfxCIvu . d/a d/b", { sender: true, options: ["-vlogDtpre.iLsfxCIvu"], paths: ["d/a", "d/b"], comps: [["d", "a"], ["d", "b"]] }],
  ["rsync --server -unlyWogDtprxSe.iLsfxCIvu --numeric-ids . dest/", { sender: false, options: ["-unlyWogDtprxSe.iLsfxCIvu", "--numeric-ids"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server --sender -logDtpre.iLsfxCIvu --list-only . dest/", { sender: true, options: ["-logDtpre.iLsfxCIvu", "--list-only"], paths: ["dest/"], comps: [["dest"]] }],
  ["rsync --server --sender -logDtpre.iLsfxCIvu --safe-links . dest/", { sender: true, options: ["-logDtpre.iLsfxCIvu", "--safe-links"], paths: ["dest/"], comps: [["dest"]] }],
  // The split form of a value is accepted and passed on joined.
  ["rsync --server -vlogDtpre.iLsfxCIvu --timeout 30 . d", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "--timeout=30"], paths: ["d"], comps: [["d"]] }],
  ["rsync --server -vlogDtpre.iLsfxCIvu --max-delete=0 . d/./x/", { sender: false, options: ["-vlogDtpre.iLsfxCIvu", "--max-delete=0"], paths: ["d/./x/"], comps: [["d", "x"]] }],
];

t.test("what real clients send is accepted and passed on as sent", async (t) => {
  for (const [line, want] of ACCEPTED) {
    const r = parse(line);
    t.same(
      { sender: r.sender, options: r.options, paths: r.paths, comps: r.targets.map((x) => x.v.comps) },
      want,
      line,
    );
  }
});

t.test("a trailing slash (or '/.') is remembered: it means 'the contents of' to rsync", async (t) => {
  t.same(parse("rsync --server --sender -de.LsfxCIvu . a/ b b/. .").targets.map((x) => x.slash), [true, false, true, true]);
});

// [line, code, reason] for everything the brief and conformance/attacks.md items 4-18 refuse.
const P = "rsync --server -vlogDtpre.iLsfxCIvu";
const S = "rsync --server --sender -vlogDtpre.iLsfxCIvu";
const REFUSED: [string, RegExp][] = [
  ["rsync --server --daemon .", /'--daemon' is refused: rsync daemon mode/],
  ["rsync --server --daemon --config=x.conf .", /'--daemon' is refused/],
  ["rsync --server --config=x.conf . d", /'--config' is refused/],
  ["rsync --rsh=./x host:a b", /only 'rsync --server' is served/],
  ["rsync -e sh . x", /only 'rsync --server' is served/],
  ["rsync", /only 'rsync --server' is served/],
  ["rsync --server -vlogDtpr -- --rsh=x . y", /'--' is refused: options hidden after it/],
  ["rsync --server -ve'sh -c id' . x", /after 'e' only rsync's capability string/],
  ["rsync --server -vlogDtprevil . x", /after 'e' only rsync's capability string/],
  ["rsync --server -vlogDtpre.iLsfxCIvu -e.LsfxCIvu . x", /only one capability string/],
  ["rsync --server -svlogDtpre.iLsfxCIvu . x", /'-s' is refused: options and paths must all be visible/],
  [`${P} --protect-args . x`, /'--protect-args' is refused/],
  [`${P} --secluded-args . x`, /'--secluded-args' is refused/],
  ...["--delete", "--del", "--delete-before", "--delete-during", "--delete-delay", "--delete-after", "--delete-excluded", "--delete-missing-args", "--force", "--remove-source-files", "--remove-sent-files"].map(
    (o): [string, RegExp] => [`${P} ${o} . d/`, new RegExp(`'${o}' is refused: append-only: rsync may not delete anything`)],
  ),
  [`${P} --max-delete=-1 --max-delete=99999 --delete . d/`, /--max-delete=99999 would allow deletions/],
  [`${P} --max-delete=1 . d/`, /--max-delete=1 would allow deletions/],
  [`${P} --log-file=d/existing.gpg . d/`, /'--log-file' is refused: rsync may not write log files/],
  [`${P} --log-file=../.ssh/authorized_keys . d/`, /'--log-file' is refused/],
  [`${P} --log-file-format=%f . d/`, /'--log-file-format' is refused/],
  [`${P} -M--log-file=x . d/`, /'-M' is refused: the server's own options/],
  [`${P} --remote-option=--log-file=x . d/`, /'--remote-option' is refused/],
  [`${P} --partial-dir=x . d/`, /'--partial-dir' is refused: append-only: files are only ever added whole/],
  [`${P} --partial . d/`, /'--partial' is refused/],
  [`${P} --temp-dir=/tmp . d/`, /'--temp-dir' is refused/],
  [`${P} -T /tmp . d/`, /'-T' is refused/],
  [`${P} --delay-updates . d/`, /'--delay-updates' is refused/],
  [`${P} -b --backup-dir=x . d/`, /'-b' is refused/],
  [`${P} --backup-dir=x . d/`, /'--backup-dir' is refused/],
  [`${P} --suffix=.old . d/`, /'--suffix' is refused/],
  [`${P} --inplace . d/`, /'--inplace' is refused/],
  [`${P} --append . d/`, /'--append' is refused/],
  [`${P} --append-verify . d/`, /'--append-verify' is refused/],
  ["rsync --server -vlogDtPre.iLsfxCIvu . d/", /'-P' is refused/],
  [`${P} --link-dest=/etc . d/`, /'--link-dest' is refused: basis directories are chosen by validate-backup/],
  [`${P} --compare-dest=../x . d/`, /'--compare-dest' is refused/],
  [`${P} --copy-dest=x . d/`, /'--copy-dest' is refused/],
  [`${S} --files-from=/etc/shadow . /`, /'--files-from' is refused/],
  [`${S} --from0 . d/`, /'--from0' is refused/],
  ["rsync --server --sender -vlLogDtpre.iLsfxCIvu . d/", /'-L' is refused: symbolic links are never followed/],
  ["rsync --server --sender -vlkogDtpre.iLsfxCIvu . d/", /'-k' is refused/],
  ["rsync --server -vKlogDtpre.iLsfxCIvu . d/", /'-K' is refused/],
  [`${S} --copy-unsafe-links . d/`, /'--copy-unsafe-links' is refused/],
  [`${S} --copy-links . d/`, /'--copy-links' is refused/],
  [`${S} --copy-devices . d/`, /'--copy-devices' is refused/],
  [`${P} --write-devices . d/`, /'--write-devices' is refused/],
  [`${P} --only-write-batch=x . d/`, /'--only-write-batch' is refused: batch files/],
  [`${P} --write-batch=x . d/`, /'--write-batch' is refused/],
  [`${P} --read-batch=x . d/`, /'--read-batch' is refused/],
  [`${P} --no-munge-links . d/`, /'--no-munge-links' is refused/],
  [`${P} --debug=ALL . d/`, /'--debug' is refused/],
  [`${P} --max-alloc=0 . d/`, /'--max-alloc' is refused/],
  [`${P} --iconv=utf8 . d/`, /'--iconv' is refused/],
  ["rsync --server -vlHogDtpre.iLsfxCIvu . d/", /'-H' is refused: hard links \(-H\) are not supported: push without -H/],
  ["rsync --server -vlogDtpAre.iLsfxCIvu . d/", /'-A' is refused: ACLs/],
  ["rsync --server -vlogDtpXre.iLsfxCIvu . d/", /'-X' is refused: extended attributes/],
  [`${P} --filter=+_x . d/`, /'--filter' is refused/],
  [`${P} -f+_x . d/`, /'-f' is refused/],
  [`${P} --exclude-from=/etc/shadow . d/`, /'--exclude-from' is refused/],
  [`${P} --include-from=x . d/`, /'--include-from' is refused/],
  [`${P} --usermap=*:root . d/`, /'--usermap' is refused/],
  [`${P} --super . d/`, /'--super' is refused/],
  [`${P} --rsync-path=/bin/sh . d/`, /'--rsync-path' is refused/],
  [`${P} --sender . d/`, /'--sender' is refused: --sender must come right after --server/],
  [`${P} --server . d/`, /'--server' is refused/],
  [`${P} --no-such-option . d/`, /option '--no-such-option' is not allowed/],
  ["rsync --server -vlogDtpraЖe.iLsfxCIvu . d/", /option '-a' is not allowed/],
  [`${P} -B1024x . d/`, /option '-B' needs a value/],
  ["rsync --server -vB1024 . d/", /'-B' must be a word of its own/],
  [`${P} --timeout . d/`, /option '--timeout' needs a value/],
  [`${P} --stats=1 . d/`, /'--stats' takes no value/],
  [`${P} --log-format=%f%L . d/`, /'--log-format' needs a value/],
  // Receiver-only options with --sender, and the other way round.
  [`${S} --ignore-existing . d/`, /'--ignore-existing' only applies when the server receives; refused with --sender/],
  [`${S} --max-delete=-1 . d/`, /'--max-delete' only applies when the server receives/],
  ["rsync --server --sender -vlogDtpmre.iLsfxCIvu . d/", /'-m' is refused: .*filter rules/],
  ["rsync --server -vlogDtpmre.iLsfxCIvu . d/", /'-m' is refused: .*filter rules/],
  [`${P} --compress-level=22 . d/`, /--compress-level=22 is refused: at most 9/],
  ["rsync --server --sender -vlogDtprze.iLsfxCIvu --compress-level=10 . d/", /at most 9/],
  [`${P} --list-only . d/`, /'--list-only' only applies when the server sends/],
  [`${P} --safe-links . d/`, /'--safe-links' only applies when the server sends/],
  // Placement and paths.
  [`${P} d/`, /'d\/' is not an option; the '.' placeholder/],
  [P, /the '.' placeholder before the paths is missing/],
  [`${P} .`, /a push takes exactly one destination \(got 0\)/],
  [`${P} . a b`, /a push takes exactly one destination \(got 2\)/],
  [`${S} .`, /a pull needs at least one source path/],
  [`${P} . ../../etc`, /OUTSIDE_ROOT: '..\/..\/etc': outside the backup root/],
  [`${P} . /etc`, /OUTSIDE_ROOT: '\/etc': outside the backup root/],
  [`${P} . d/../../x`, /OUTSIDE_ROOT/],
  [`${S} . ${ROOT}/../host2/x`, /OUTSIDE_ROOT/],
  [`${P} . ${ROOT}x/y`, /OUTSIDE_ROOT/],
  [`${S} . d/*.gpg`, /contains a wildcard or backslash/],
  [`${S} . 'd/[ab]'`, /contains a wildcard/],
  [`${S} . 'd/a?'`, /contains a wildcard/],
  [`${S} . 'd/\\.\\./x'`, /contains a wildcard or backslash/],
  [`${P} . -x`, /starts with '-'/],
  [`${P} . ''`, /an empty path is not allowed/],
];

t.test("refused, each with its reason", async (t) => {
  for (const [line, reason] of REFUSED) t.match(refusal(line), reason, line);
});

t.test("every refusal is a VbError NOT_ALLOWED or OUTSIDE_ROOT, never an accident", async (t) => {
  for (const [line] of REFUSED) t.match(refusal(line), /^(NOT_ALLOWED: rsync: |OUTSIDE_ROOT: |BAD_REQUEST: )/, line);
});

t.test("the table: refused entries give a reason; the dangerous ones are never allowed", async (t) => {
  for (const [name, cls] of [...Object.entries(LONG_OPTIONS), ...Object.entries(SHORT_OPTIONS)])
    if (cls.kind === "refuse") t.ok(cls.reason.length > 10, `${name} has a reason`);
  const never = /^(del|delete.*|remove-.*|force|backup.*|suffix|partial.*|inplace|append.*|temp-dir|delay-updates|.*-dest|log-file.*|.*batch|daemon|config|files-from|filter|exclude.*|include.*|copy-.*links|copy-links|keep-dirlinks|copy-devices|write-devices|no-munge-links|debug|max-alloc|iconv|hard-links|acls|xattrs|protect-args|secluded-args|remote-option|rsh|rsync-path)$/;
  for (const [name, cls] of Object.entries(LONG_OPTIONS)) if (never.test(name)) t.equal(cls.kind, "refuse", `--${name}`);
  for (const letter of "sbPTKLkHAXMfF0em") t.not(SHORT_OPTIONS[letter]?.kind ?? "refuse", "flag", `-${letter}`);
});

t.test("the capability string", async (t) => {
  for (const ok of ["e.", "e.iLsfxCIvu", "e31.LsfxCIvu", "e.LsfxCIvu"]) t.ok(CAPABILITIES.test(ok), ok);
  for (const bad of ["e", "evil", "e'sh", "e.iL sfx", "e.iL-x", "e.i/bin/sh", "e.x\n", "e31.14iL"]) t.notOk(CAPABILITIES.test(bad), bad);
});

t.test("options are passed on only in the table's canonical form", async (t) => {
  for (const [line] of ACCEPTED)
    for (const o of parse(line).options) t.match(o, /^(-[A-Za-z]*(e\d*\.[A-Za-z]*)?|-[B@]-?\d+|--[a-z0-9-]+(=[^\s]*)?)$/, o);
});
