// parseCommand in-process: the inputs that cannot travel through an environment variable (NUL, 1 MiB)
// and the places where shell-quote and sh disagree about the words.
import t, { type Test } from "tap";
import { parseCommand, MAX_COMMAND_BYTES } from "../src/gate/command.js";
import { VbError } from "../src/errors.js";

// Test names stay ASCII: a raw U+2028 in a name would break the TAP stream itself.
function show(raw: string | undefined): string {
  return JSON.stringify(raw?.slice(0, 80) ?? null).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function refused(t: Test, raw: string | undefined, why: RegExp): void {
  t.throws(() => parseCommand(raw), { name: "VbError", code: "NOT_ALLOWED", message: why }, show(raw));
}

t.test("inputs an environment variable cannot carry", async (t) => {
  // execve() stops an environment string at NUL, so no client can deliver one; refuse it anyway.
  refused(t, "rsync --server\0--daemon .", /control character U\+0000/);
  refused(t, "true\0", /control character U\+0000/);
  // Linux caps one environment string at 128 KiB (MAX_ARG_STRLEN): 1 MiB never reaches us either.
  refused(t, "rsync " + "a".repeat(1024 * 1024), /longer than 8192 bytes/);
  refused(t, "true " + "é".repeat(MAX_COMMAND_BYTES / 2), /longer than/);
  t.doesNotThrow(() => parseCommand("rsync " + "a".repeat(MAX_COMMAND_BYTES - 6)), "exactly the limit is fine");
});

t.test("words sh and shell-quote would split differently are refused", async (t) => {
  refused(t, "rsync --server $'--daemon' .", /shell syntax '\$'/); // bash ANSI-C quoting
  refused(t, "rsync --server . $'d\\nx'", /shell syntax '\$'/);
  refused(t, "rsync --server . ${HOME}", /shell syntax '\$'/);
  refused(t, "rsync --server . 'unterminated", /unterminated single quote/);
  refused(t, 'rsync --server . "unterminated', /unterminated double quote/);
  refused(t, 'rsync --server . "a\\"', /unterminated double quote/);
  refused(t, "rsync --server . dest\\", /backslash at the end/);
  refused(t, "rsync\u00a0--server . d", /whitespace character U\+00A0/);
  refused(t, "rsync --server .\u2028d", /whitespace character U\+2028/);
  refused(t, "rsync --server .\u3000d", /whitespace character U\+3000/);
  refused(t, "rsync --server .\ufeffd", /whitespace character U\+FEFF/);
  refused(t, "rsync --server . a#b", /shell syntax '#'/);
  refused(t, "rsync --server . 'a#b'", /shell syntax '#'/);
  refused(t, "rsync --server . d\ufffd", /not valid UTF-8/);
  refused(t, "rsync --server\t.", /control character U\+0009/);
  refused(t, "rsync --server . d\u001b[2J", /control character U\+001B/);
});

t.test("what sh would pass, we get", async (t) => {
  const cases: Array<[string, string[]]> = [
    ["rsync --server -vlogDtpre.iLsfxCIvu . 'dest dir/'", ["--server", "-vlogDtpre.iLsfxCIvu", ".", "dest dir/"]],
    ["rsync --server . dest\\ dir/", ["--server", ".", "dest dir/"]],
    ['rsync --server . "a\\b"', ["--server", ".", "a\\b"]],
    ['rsync --server . "a\\\\b"', ["--server", ".", "a\\b"]],
    ["rsync --server . a''b\"\"c", ["--server", ".", "abc"]],
    ["rsync --server . ''", ["--server", ".", ""]],
    ["rsync --server . ünï/çødé", ["--server", ".", "ünï/çødé"]],
    ["rsync  --server   .  d ", ["--server", ".", "d"]],
  ];
  for (const [raw, args] of cases) t.same(parseCommand(raw), { kind: "rsync", args }, show(raw));
  t.same(parseCommand("scp -f 'dir/*.txt'"), { kind: "scp", args: ["-f", "dir/*.txt"] });
  t.same(parseCommand("scp -f dir/*.txt"), { kind: "scp", args: ["-f", "dir/*.txt"] }, "an unquoted glob stays a pattern");
  t.same(parseCommand("internal-sftp -l INFO"), { kind: "sftp", program: "internal-sftp", args: ["-l", "INFO"] });
  t.same(parseCommand("true"), { kind: "true" });
});

t.test("only known programs, and true without arguments", async (t) => {
  refused(t, undefined, /no command given/);
  refused(t, "", /empty command/);
  refused(t, "   ", /empty command/);
  refused(t, "true 1", /takes no arguments/);
  for (const p of ["/usr/bin/rsync", "./rsync", "sftp-server", "/bin/sh", "env", "RSYNC", "__proto__", "constructor", "toString"])
    refused(t, `${p} --server . d`, /is not allowed/);
  const e = (() => {
    try {
      parseCommand("hasOwnProperty");
    } catch (err) {
      return err;
    }
  })();
  t.ok(e instanceof VbError, "inherited object keys are not programs");
});
