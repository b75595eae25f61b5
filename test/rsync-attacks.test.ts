// The rsync family of conformance/attacks.md (items 4-18), through the real binary as the gate user.
// First each item with helpers/refusal.ts (its cases through the binary: refusal, deny line, no side
// effect anywhere; every variant in-process through parse + decide), then each item's own reasons:
// refused before rsync starts, the exact reason on stderr and in the deny line, no staging left.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll, runGate, auditLines, type Sandbox, type Snap } from "./helpers/env.js";
import { leftovers, localTree, rsyncClient, lastSession } from "./helpers/rsync-client.js";
import { finishedFull } from "./helpers/duplicity.js";
import { hostileWorld } from "./helpers/sftp-client.js";
import { item, PUSH, PULL, CAPS } from "./helpers/refusal.js";
import { sample } from "./helpers/scale.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

// ---- items 4 and 6-11: options that start a daemon, hide, run, read stdin, delete or write logs
item(t, 4, "rsync daemon mode (CVE-2019-3463)", {
  strict: "rsync",
  cases: ["rsync --server --daemon .", "rsync --server --daemon --config=x.conf .", `rsync --server ${CAPS} --daemon . d/`],
  more: ["rsync --daemon --config=x.conf", "rsync --server --daemon --config=../home/x.conf --port=8873 .", "rsync --server --config=x.conf ."],
});

item(t, 6, "options hidden after -- (CVE-2012-2251)", {
  strict: "rsync",
  cases: ["rsync --server -vlogDtpr -- --rsh=x . y", `${PUSH} . -- --delete d/`, `rsync --server -- --sender ${CAPS} . d/`],
  more: [`${PUSH} -- --delete . d/`, `${PUSH} --rsh=x . d/`, `${PUSH} . -- d/`, `${PUSH} -- . d/`],
});

item(t, 7, "after 'e' only a capability string e<digits>.<letters>", {
  strict: "rsync",
  cases: ["rsync --server -ve'sh -c id' . x", "rsync --server -vlogDtprevil . x", "rsync --server -e 'sh -c id' . d/"],
  more: [
    `rsync --server -vlogDtpre'.iLs;id' . d/`,
    "rsync --server -vlogDtpre.iLs/bin/sh . d/",
    "rsync --server -vlogDtpre31.iLsfxC-- . d/",
    "rsync --server -vlogDtpe . d/",
    "rsync --server -vlogDtpre.iLsfxCIvu=x . d/",
    "rsync --server -vlogDtpre.iLsfxCIvu'  ' . d/",
  ],
});

item(t, 8, "-s: arguments would arrive on stdin", {
  strict: "rsync",
  cases: ["rsync --server -svlogDtpre.iLsfxCIvu . x", `${PUSH} --protect-args . d/`, `${PUSH} --secluded-args . d/`],
  more: ["rsync --server -vlogsDtpre.iLsfxCIvu . x", "rsync --server --sender -svlogDtpre.iLsfxCIvu . d/", `${PUSH} --protect-args=1 . d/`],
});

const DELETES = ["--delete", "--del", "--delete-before", "--delete-during", "--delete-delay", "--delete-after", "--delete-excluded", "--delete-missing-args", "--force"];
item(t, 9, "every delete option", {
  strict: "rsync",
  cases: [`${PUSH} --delete . d/`, "rsync --server -re.iLsfxCIvu --delete . d/", `${PUSH} --delete-after . d/`, `${PULL} --remove-source-files . d/`],
  more: [
    ...DELETES.map((o) => `${PUSH} ${o} . d/`),
    ...DELETES.map((o) => `${PUSH} --ignore-existing --max-delete=-1 ${o} . d/`),
    `${PUSH} --delete --force . d/`,
    `${PULL} --remove-sent-files . d/`,
    `${PUSH} --remove-source-files . d/`,
  ],
});

item(t, 10, "--max-delete: the last value wins in rsync", {
  strict: "rsync",
  cases: [`${PUSH} --max-delete=-1 --max-delete=99999 --delete . d/`, `${PUSH} --max-delete=-1 --delete --max-delete=99999 . d/`],
  more: [`${PUSH} --ignore-existing --max-delete=-1 --max-delete=99999 --delete-during . d/`, `${PUSH} --max-delete=0 --max-delete=1 --del . d/`],
});

item(t, 11, "--log-file (and its -M forms)", {
  strict: "rsync",
  cases: [`${PUSH} --log-file=d/existing.gpg . d/`, `${PUSH} --log-file=../.ssh/authorized_keys . d/`, `${PUSH} -M--log-file=../x . d/`],
  more: [
    `${PUSH} --log-file=../home/.ssh/authorized_keys . d/`,
    `${PUSH} --log-file ../outside/canary.txt . d/`,
    `${PUSH} --remote-option=--log-file=../x . d/`,
    `${PUSH} --log-file-format=%f --log-file=x . d/`,
    `${PULL} --log-file=/tmp/x . d/`,
  ],
});

// ---- items 12-18: options that write aside, read lists or follow links, paths out of the root, the access policy
item(t, 12, "partial, temp, delayed and backup files", {
  strict: "rsync",
  cases: [`${PUSH} --partial-dir=../outside . d/`, `${PUSH} -T /tmp . d/`, `${PUSH} --delay-updates . d/`, `${PUSH} -b --backup-dir=x . d/`],
  more: [
    `${PUSH} --partial-dir=x . d/`,
    `${PUSH} --temp-dir=/tmp . d/`,
    `${PUSH} -T/tmp . d/`,
    "rsync --server -vblogDtpre.iLsfxCIvu --backup-dir=../outside . d/",
    `${PUSH} --backup --suffix=.gpg . d/`,
    `${PUSH} --suffix=.x . d/`,
    `${PUSH} --suffix=~ . d/`,
  ],
});

item(t, 13, "basis directories from the client", {
  strict: "rsync",
  cases: [`${PUSH} --link-dest=/etc . d/`, `${PUSH} --compare-dest=../x . d/`, `${PUSH} --copy-dest=../outside . d/`],
  more: [`${PUSH} --link-dest ../home/.ssh . d/`, `${PULL} --compare-dest=/etc . d/`, `${PUSH} --compare-dest=d . new/`],
});

item(t, 14, "--files-from and other lists read by the server", {
  strict: "rsync",
  cases: [`${PULL} --files-from=/etc/shadow . /`, `${PULL} --files-from=../outside/canary.txt . d/`, `${PULL} --exclude-from=/etc/shadow . d/`],
  more: [`${PULL} --files-from=- --from0 . d/`, `${PUSH} --include-from=../outside/sub/secret . d/`, `${PULL} --filter=._/etc/shadow . d/`],
});

item(t, 15, "following links and devices", {
  strict: "rsync",
  cases: ["rsync --server --sender -vLlogDtpre.iLsfxCIvu . d/", "rsync --server --sender -vklogDtpre.iLsfxCIvu . d/", `${PULL} --copy-unsafe-links . d/`, `${PULL} --copy-devices . d/`],
  more: ["rsync --server --sender -vlogDtpLre.iLsfxCIvu . d/", `${PULL} --copy-links . d/`, `${PULL} --copy-dirlinks . d/`, "rsync --server -vKlogDtpre.iLsfxCIvu . d/", `${PUSH} --keep-dirlinks . d/`],
});

item(t, 16, "devices, batches, munging, debug, allocation, iconv", {
  strict: "rsync",
  cases: [`${PUSH} --write-devices . d/`, `${PUSH} --only-write-batch=x . d/`, `${PUSH} --read-batch=x . d/`, `${PUSH} --debug=ALL . d/`],
  more: [`${PUSH} --write-batch=x . d/`, `${PUSH} --no-munge-links . d/`, `${PUSH} --max-alloc=0 . d/`, `${PUSH} --iconv=UTF-8,ISO-8859-1 . d/`, `${PUSH} --iconv=. . d/`],
});

item(t, 17, "paths out of the root, and two destinations", {
  strict: "rsync",
  cases: [`${PUSH} . ../../etc`, `${PUSH} . /etc`, `${PUSH} . d/../../x`, { command: `${PUSH} . ~other/`, reason: /shell syntax '~'/ }, `${PUSH} . d1/ d2/`, `${PULL} . ../outside/`],
  more: [`${PUSH} . ../outside/`, `${PUSH} . d/../../outside/sub/`, `${PULL} . /etc/passwd`, `${PULL} . /proc/self/environ`, `${PULL} . d/ ../outside/`, `${PUSH} . ..`, `${PUSH} . /`],
});

const NO_PULL = { pull: false };
item(t, 18, "pulling with pull: false", {
  strict: "rsync",
  config: NO_PULL,
  cases: [`${PULL} . d/`, "rsync --server --sender -de.LsfxCIvu . d/"],
  more: [`${PULL} . d/existing.gpg`, "rsync --server --sender -e.LsfxCIvu . d/existing.gpg"],
});

item(t, 18, "pushing in read-only mode", {
  strict: "rsync",
  config: { access: "read-only" },
  cases: [`${PUSH} . d/`, "rsync --server -e.LsfxCIvu . d/new.gpg"],
  more: [`${PUSH} --ignore-existing . new/`, "rsync --server -vlogDtprze.iLsfxCIvu . d/"],
});

// ---- each item's own reasons
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

async function refusedExactly(t: Test, sb: Sandbox, command: string, reason: RegExp): Promise<void> {
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
    // The same items run in full in the item() sections above; the quick scale (CI) takes one case
    // of each item here.
    for (const [command, reason] of sample(cases, 1000)) await t.test(command, (t) => refusedExactly(t, sb, command, reason));
  });
}

t.test("attacks.md item 18: a pull with pulls disabled, a push with a read-only key", async (t) => {
  const sb = sandbox(t, { files: FILES, config: { pull: false } });
  await t.test("pull: false", (t) => refusedExactly(t, sb, `${PULL} . d/`, /reading \(rsync --sender\) is disabled for this key \(pull: false\)/));
  sb.configure({ access: "read-only" });
  await t.test("read-only push", (t) => refusedExactly(t, sb, `${PUSH} . d/`, /read-only: this key cannot upload \(rsync push refused\)/));
  await t.test("read-only push of one file", (t) => refusedExactly(t, sb, `rsync --server -e.LsfxCIvu . new.gpg`, /read-only/));
});

// ---- issue 16, item 4: the publisher makes directories by the name rules of a file
t.test("16.4: a pushed directory named like a backup file is not made; its files are skipped and audited", async (t) => {
  const sb = sandbox(t);
  const { at } = finishedFull(sb);
  const dirName = `duplicity-inc.${at(0)}.to.${at(1)}.manifest.gpg`;
  const src = localTree(t, { [`${dirName}/inside.gpg`]: "inside\n", "other/fine.gpg": "fine\n" });
  const before = snapshotAll(sb);
  const r = await rsyncClient(sb, ["-r", `${src}/`, "h:h/"]);
  // A push that leaves a sent file unstored exits 23 (issue 17, item 2), naming it.
  t.equal(r.code, 23, `a directory push skips what it cannot store, and says so: ${r.stderr}`);
  t.match(r.stderr, /is named like a backup file, never a directory/);
  t.notOk(fs.existsSync(path.join(sb.root, "h", dirName)), "no directory under a backup file's name");
  t.equal(fs.readFileSync(path.join(sb.root, "h/other/fine.gpg"), "utf8"), "fine\n", "the rest arrived");
  const skipped = lastSession(sb).filter((l) => l.event === "skipped");
  t.match(skipped, [{ path: `h/${dirName}`, reason: /named like a backup file, never a directory/ }]);
  const after = snapshotAll(sb);
  const rest = (s: Snap) => Object.fromEntries(Object.entries(s).filter(([k]) => k !== "root/h" && !k.startsWith("root/h/other")));
  t.same(rest(after), rest(before), "nothing else changed, inside or outside the root");
});

// ---- issue 16, item 7: rsync reads nothing outside the root; the gate's limits always apply
t.test("16.7: a push learns nothing of a file outside the root through a link in the live tree (no compare basis)", async (t) => {
  const sb = hostileWorld(t); // `escape` in the root links to the sibling directory `outside`
  const canary = path.join(sb.outside, "canary.txt");
  const st = fs.statSync(canary);
  const sent: string[] = [];
  const before = snapshotAll(sb);
  for (const guess of [fs.readFileSync(canary), Buffer.from("a wrong guess\n")]) {
    const src = localTree(t, { "escape/canary.txt": guess });
    fs.utimesSync(path.join(src, "escape/canary.txt"), st.atime, st.mtime);
    const r = await rsyncClient(sb, ["-rc", "--stats", `${src}/`, "h:./"]);
    // The staged directory cannot land on the link: unstored, exit 23, the same words for both guesses.
    t.equal(r.code, 23, r.stderr);
    t.match(r.stderr, /'escape' was not stored: 'escape': exists and is not a directory/);
    sent.push(r.stdout.toString().match(/Number of regular files transferred: (\d+)/)?.[1] ?? "?");
  }
  t.same(sent, ["1", "1"], "the right guess and the wrong one look the same: the file is sent either way");
  t.same(snapshotAll(sb), before, "nothing changed inside or outside the root");
});

t.test("16.7: the session's idle limit applies whatever --timeout the client sends", async (t) => {
  const sb = sandbox(t, { files: FILES, config: { limits: { idleSeconds: 5 } } });
  for (const word of ["--timeout=0", "--timeout=999999999"]) {
    for (const command of [`${PUSH} ${word} . d/`, `${PULL} ${word} . d/`]) {
      // A client that says nothing after the command: rsync must give up by itself.
      const started = Date.now();
      const r = await runGate(sb, command, { keepOpen: true, timeoutMs: 60_000 });
      const took = (Date.now() - started) / 1000;
      t.equal(r.signal, null, `${command}: rsync ended by itself (not killed after 60 s)`);
      t.ok(took < 45, `${command}: within the idle limit (${took.toFixed(1)} s)`);
      t.match(r.stderr, /timeout/i, `${command}: rsync says it timed out`);
    }
  }
});

t.test("16.7: --compress-level above 9 is refused (zstd 22 costs the server ~740 MB per session); 9 still works", async (t) => {
  const sb = sandbox(t, { files: FILES });
  const before = snapshotAll(sb);
  const dst = localTree(t);
  const r = await rsyncClient(sb, ["-rz", "--compress-choice=zstd", "--compress-level=22", "h:d/", `${dst}/`]);
  t.not(r.code, 0, "refused");
  t.match(r.stderr, /validate-backup: rsync: --compress-level=22 is refused: at most 9/);
  t.match(lastSession(sb)[0], { event: "request", decision: "deny" });
  t.same(snapshotAll(sb), before);
  const ok = await rsyncClient(sb, ["-rz", "--compress-choice=zstd", "--compress-level=9", "h:d/", `${dst}/`]);
  t.equal(ok.code, 0, ok.stderr);
});

t.test("16.7: -m on a push is refused: the server would read the client's filter rules (a dir-merge can name any file)", async (t) => {
  const sb = sandbox(t, { files: FILES });
  const before = snapshotAll(sb);
  const src = localTree(t, { "sub/a.gpg": "a\n" });
  const r = await rsyncClient(sb, ["-rm", `--filter=dir-merge ${path.join(sb.outside, "canary.txt")}`, `${src}/`, "h:d/"]);
  t.not(r.code, 0, "refused");
  t.match(r.stderr, /validate-backup: rsync: option '-m' is refused: .*filter rules/);
  t.same(snapshotAll(sb), before);
  t.same(leftovers(sb), []);
});
