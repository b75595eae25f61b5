// The rsync lines of conformance/attacks.md (items 4-18), through the real binary as the gate
// user: each is refused before rsync starts, with its own reason on stderr and in a deny line of
// the audit log, and nothing inside or outside the root changes.
import t, { type Test } from "tap";
import { sandbox, snapshotAll, runGate, auditLines, type Sandbox } from "./helpers/env.js";
import { leftovers } from "./helpers/rsync-client.js";
import { sample } from "./helpers/scale.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

const CAPS = "-vlogDtpre.iLsfxCIvu";
const PUSH = `rsync --server ${CAPS}`;
const PULL = `rsync --server --sender ${CAPS}`;
const FILES = { "d/existing.gpg": "old volume\n", "a.gpg": "A\n" };

const ITEMS: Record<string, [string, RegExp][]> = {
  "4 daemon mode (CVE-2019-3463)": [
    ["rsync --server --daemon .", /'--daemon' is refused: rsync daemon mode is never started/],
    ["rsync --server --daemon --config=x.conf .", /'--daemon' is refused/],
  ],
  "5 not a server, or not rsync first (CVE-2012-2252)": [
    ["rsync --rsh=./x host:a b", /only 'rsync --server' is served/],
    [`sudo ${PUSH} . d/`, /'sudo' is not allowed/],
  ],
  "6 options hidden after -- (CVE-2012-2251)": [["rsync --server -vlogDtpr -- --rsh=x . y", /'--' is refused: options hidden after it/]],
  "7 a remote shell in place of the capability string": [
    ["rsync --server -ve'sh -c id' . x", /after 'e' only rsync's capability string/],
    ["rsync --server -vlogDtprevil . x", /after 'e' only rsync's capability string/],
  ],
  "8 -s: arguments on stdin": [[`rsync --server -s${CAPS.slice(1)} . x`, /'-s' is refused: options and paths must all be visible/]],
  "9 deletes": ["--delete", "--del", "--delete-after", "--delete-excluded", "--delete-missing-args", "--force", "--remove-source-files", "--remove-sent-files"].map(
    (o): [string, RegExp] => [`${PUSH} ${o} . d/`, new RegExp(`'${o}' is refused: append-only: rsync may not delete anything`)],
  ),
  "10 the last --max-delete wins": [[`${PUSH} --max-delete=-1 --max-delete=99999 --delete . d/`, /--max-delete=99999 would allow deletions/]],
  "11 log files": [
    [`${PUSH} --log-file=d/existing.gpg . d/`, /'--log-file' is refused: rsync may not write log files/],
    [`${PUSH} --log-file=../.ssh/authorized_keys . d/`, /'--log-file' is refused/],
    [`${PUSH} -M--log-file=d/existing.gpg . d/`, /'-M' is refused/],
    [`${PUSH} --remote-option=--log-file=x . d/`, /'--remote-option' is refused/],
  ],
  "12 partial, temp, delayed and backup files": [
    [`${PUSH} --partial-dir=x . d/`, /'--partial-dir' is refused: append-only: files are only ever added whole/],
    [`${PUSH} --temp-dir=/tmp . d/`, /'--temp-dir' is refused/],
    [`${PUSH} -T /tmp . d/`, /'-T' is refused/],
    [`${PUSH} --delay-updates . d/`, /'--delay-updates' is refused/],
    [`${PUSH} -b --backup-dir=x . d/`, /'-b' is refused/],
    [`${PUSH} --suffix=.bak . d/`, /'--suffix' is refused/],
  ],
  "13 basis directories": [
    [`${PUSH} --link-dest=/etc . d/`, /'--link-dest' is refused: basis directories/],
    [`${PUSH} --compare-dest=../x . d/`, /'--compare-dest' is refused/],
    [`${PUSH} --copy-dest=/ . d/`, /'--copy-dest' is refused/],
  ],
  "14 files-from": [[`${PULL} --files-from=/etc/shadow . /`, /'--files-from' is refused/]],
  "15 following links and devices when sending": [
    ["rsync --server --sender -vlLogDtpre.iLsfxCIvu . d/", /'-L' is refused: symbolic links are never followed/],
    ["rsync --server --sender -vlkogDtpre.iLsfxCIvu . d/", /'-k' is refused/],
    [`${PULL} --copy-unsafe-links . d/`, /'--copy-unsafe-links' is refused/],
    [`${PULL} --copy-devices . d/`, /'--copy-devices' is refused/],
  ],
  "16 devices, batches, munging, debug, allocation, iconv": [
    [`${PUSH} --write-devices . d/`, /'--write-devices' is refused/],
    [`${PUSH} --only-write-batch=x . d/`, /'--only-write-batch' is refused/],
    [`${PUSH} --write-batch=x . d/`, /'--write-batch' is refused/],
    [`${PUSH} --read-batch=x . d/`, /'--read-batch' is refused/],
    [`${PUSH} --no-munge-links . d/`, /'--no-munge-links' is refused/],
    [`${PUSH} --debug=ALL . d/`, /'--debug' is refused/],
    [`${PUSH} --max-alloc=0 . d/`, /'--max-alloc' is refused/],
    [`${PUSH} --iconv=utf8,latin1 . d/`, /'--iconv' is refused/],
  ],
  "17 paths outside the root, and two destinations": [
    [`${PUSH} . ../../etc`, /'..\/..\/etc': outside the backup root/],
    [`${PUSH} . /etc`, /'\/etc': outside the backup root/],
    [`${PUSH} . d/../../x`, /outside the backup root/],
    [`${PUSH} . ~other/`, /shell syntax '~' is refused/],
    [`${PUSH} . d/ e/`, /a push takes exactly one destination \(got 2\)/],
    [`${PULL} . d/../../outside/canary.txt`, /outside the backup root/],
  ],
};

async function refused(t: Test, sb: Sandbox, command: string, reason: RegExp): Promise<void> {
  const before = snapshotAll(sb);
  const seen = auditLines(sb).length;
  const r = await runGate(sb, command);
  t.not(r.code, 0, "non-zero exit");
  t.match(r.stderr, /^validate-backup: /, "a message for the client");
  t.match(r.stderr, reason);
  const lines = auditLines(sb).slice(seen);
  t.match(lines[0], { event: "request", decision: "deny", command, client: "127.0.0.1", label: "test" });
  t.match(lines[0]?.reason, reason);
  t.equal(`validate-backup: ${String(lines[0]?.reason)}\n`, r.stderr, "the audit says what the client was told");
  t.notOk(lines.some((l) => l.event === "rsync"), "rsync never started");
  t.equal(r.stdout.length, 0, "nothing on stdout");
  t.same(snapshotAll(sb), before, "nothing changed inside or outside the root");
  t.same(leftovers(sb), [], "no staging left");
}

for (const [item, cases] of Object.entries(ITEMS)) {
  t.test(`attacks.md item ${item}`, async (t) => {
    const sb = sandbox(t, { files: FILES });
    // The same items run in full in gate-attacks-rsync*.test.ts; the quick scale (CI) takes one case
    // of each item here.
    for (const [command, reason] of sample(cases, 1000)) await t.test(command, (t) => refused(t, sb, command, reason));
  });
}

t.test("attacks.md item 18: a pull with pulls disabled, a push with a read-only key", async (t) => {
  const sb = sandbox(t, { files: FILES, config: { pull: false } });
  await t.test("pull: false", (t) => refused(t, sb, `${PULL} . d/`, /reading \(rsync --sender\) is disabled for this key \(pull: false\)/));
  sb.configure({ access: "read-only" });
  await t.test("read-only push", (t) => refused(t, sb, `${PUSH} . d/`, /read-only: this key cannot upload \(rsync push refused\)/));
  await t.test("read-only push of one file", (t) => refused(t, sb, `rsync --server -e.LsfxCIvu . new.gpg`, /read-only/));
});
