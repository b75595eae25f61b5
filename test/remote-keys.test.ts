// remote/keys.ts in-process: what `check` says of a key line. A line is restricted by 'restrict'
// or by all four of the older no-* options; some of them leave the rest open.
import t from "tap";
import { parseKeyLine, lineFaults } from "../src/remote/keys.js";

const GATE = 'command="/opt/validate-backup/bin/validate-backup --config /etc/validate-backup/h.json"';
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4bG9qc2Rrc2xka2ZqbGtzZGpmbGtzamRmbGtqc2Rm h@x";
const OLD = ["no-pty", "no-port-forwarding", "no-agent-forwarding", "no-X11-forwarding"];
const LACKS = /lacks 'restrict'/;

const CASES: [string, string[], RegExp[]][] = [
  ["restrict", ["restrict"], []],
  ["all four older options", OLD, []],
  ...OLD.map((o): [string, string[], RegExp[]] => [`the older options without ${o}`, OLD.filter((x) => x !== o), [LACKS]]),
  ["one older option only", ["no-pty"], [LACKS]],
  ["no restriction", [], [LACKS]],
  ["restrict, then pty again", ["restrict", "pty"], [/carries pty/]],
];

for (const [name, options, faults] of CASES) {
  t.test(name, async (t) => {
    const k = parseKeyLine([GATE, ...options].join(",") + " " + KEY);
    if (!k || "bad" in k) return void t.fail(`does not parse: ${JSON.stringify(k)}`);
    const got = lineFaults(k);
    t.equal(got.length, faults.length, `${faults.length} fault(s): ${got.join("; ")}`);
    for (const [i, f] of faults.entries()) t.match(got[i], f);
  });
}
