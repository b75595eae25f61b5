// attacks.md items 4 and 6-11: rsync options that start a daemon, hide, run, read stdin, delete or
// write logs. Through the real binary (refusal, deny line, no side effect); the wording of each
// refusal is the rsync gate's own tests' business.
import t from "tap";
import { item, PUSH, PULL, CAPS } from "./helpers/refusal.js";

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
