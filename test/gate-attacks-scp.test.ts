// attacks.md items 19 and 20. scp is being built elsewhere: these assert only that each is refused
// (non-zero exit, a reason, an audit record) and changes nothing, not how.
import t from "tap";
import { item } from "./helpers/refusal.js";

item(t, 19, "scp options that run programs (CVE-2007-6415, CVE-2019-1000018)", {
  strict: "protocol",
  cases: [
    { command: "scp -S /bin/sh -t x", input: "C0644 5 y\nhello\0" },
    { command: "scp '-oProxyCommand=sh -c id' -t x", input: "C0644 5 y\nhello\0" },
    { command: "scp -oPKCS11Provider=./x.so -t x", input: "C0644 5 y\nhello\0" },
    { command: "scp -F cfg -t x", input: "C0644 5 y\nhello\0" },
    { command: "scp -3 a b" },
  ],
});

item(t, 20, "scp paths out of the root", {
  strict: "protocol",
  cases: [
    { command: "scp -t ../x", input: "C0644 5 x\nhello\0" },
    { command: "scp -t /etc", input: "C0644 5 x\nhello\0" },
    { command: "scp -t ../home/.ssh", input: "C0644 5 authorized_keys\nhello\0" },
    { command: "scp -f /etc/passwd", input: "\0\0\0" },
    { command: "scp -f d/../../x", input: "\0\0\0" },
    { command: "scp -f ../outside/canary.txt", input: "\0\0\0" },
  ],
});
