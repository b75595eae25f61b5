// attacks.md items 12-18: rsync options that write aside, read lists or follow links, paths out of
// the root, and the access policy. Through the real binary (refusal, deny line, no side effect).
import t from "tap";
import { item, PUSH, PULL } from "./helpers/refusal.js";

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
