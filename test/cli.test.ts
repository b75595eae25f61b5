// The binary's own command line: --help, --version, and the usage errors of serve mode.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { BIN, TOP, run } from "./helpers/env.js";

const env = { PATH: "/usr/bin:/bin" };
const version = (JSON.parse(fs.readFileSync(path.join(TOP, "package.json"), "utf8")) as { version: string }).version;

t.test("--help lists the usage and every subcommand", async (t) => {
  const r = await run([BIN, "--help"], { env });
  t.equal(r.code, 0);
  t.equal(r.stderr, "");
  const out = r.stdout.toString();
  t.match(out, /^validate-backup: an SSH forced command/);
  t.match(out, /validate-backup --config FILE/);
  t.match(out, /command="… --config FILE",restrict/);
  for (const sub of ["serve", "install-remote", "check"]) t.match(out, new RegExp(`validate-backup ${sub} `), `lists ${sub}`);
  t.match(out, /--help \| --version/);
  for (const alias of ["-h", "help"]) {
    const again = await run([BIN, alias], { env });
    t.equal(again.code, 0, alias);
    t.equal(again.stdout.toString(), out, `${alias} prints the same`);
  }
});

// Every subcommand, from the table the binary itself lists: --help prints its usage (exit 0), and a
// wrong command line ends with the very same usage lines (exit 2): one source, one style.
t.test("every subcommand answers --help with its usage, exit 0, and a bad option with the same usage, exit 2", async (t) => {
  const all = (await run([BIN, "--help"], { env })).stdout.toString();
  const subs = [...new Set([...all.matchAll(/^ {2}validate-backup ([a-z][a-z-]*) /gm)].map((m) => m[1]!))];
  t.ok(subs.length >= 9, `${subs.length} subcommands listed`);
  // [subcommand, a wrong command line for it]: an unknown option, and for verify each of its two forms.
  const wrong: [string, string[]][] = subs.flatMap((sub) => [[sub, ["--no-such-option"]] as [string, string[]], ...(sub === "verify" ? [[sub, ["--stored", "--no-such-option"]] as [string, string[]]] : [])]);
  for (const sub of subs) {
    let usage = "";
    for (const flag of ["--help", "-h"]) {
      const r = await run([BIN, sub, flag], { env });
      t.equal(r.code, 0, `${sub} ${flag}: exit 0 ${r.stderr}`);
      t.match(r.stdout.toString(), new RegExp(`^usage: validate-backup ${sub} \\S`), `${sub} ${flag}: its usage`);
      t.equal(r.stderr, "");
      usage = r.stdout.toString().split("\n\n")[0]!;
    }
    for (const [, argv] of wrong.filter(([s]) => s === sub)) {
      const r = await run([BIN, sub, ...argv], { env });
      const what = `${sub} ${argv.join(" ")}`;
      t.equal(r.code, 2, `${what}: exit 2`);
      t.match(r.stderr, new RegExp(`^validate-backup ${sub}[a-z -]*: .*--no-such-option`), `${what}: names the option`);
      t.ok(r.stderr.endsWith(`\n${usage}\n`), `${what}: ends with the usage --help prints`);
      t.equal(r.stdout.length, 0, `${what}: nothing on stdout`);
    }
  }
});

t.test("--version prints the package's version", async (t) => {
  const r = await run([BIN, "--version"], { env });
  t.equal(r.code, 0);
  t.equal(r.stdout.toString(), `validate-backup ${version}\n`);
  t.equal(r.stderr, "");
});

t.test("usage errors exit 2 and say so", async (t) => {
  for (const [argv, why] of [
    [[], /see --help/],
    [["frobnicate"], /unknown command 'frobnicate'/],
    [["--config"], /usage: validate-backup serve --config FILE\n +validate-backup --config FILE/],
    [["--config", "/x.json", "extra"], /expected --config FILE \(got: --config \/x\.json extra\)\nusage: validate-backup serve --config FILE/],
    [["serve", "--conf", "/x.json"], /usage/],
    [["__proto__"], /unknown command '__proto__'/],
  ] as const) {
    const r = await run([BIN, ...argv], { env });
    t.equal(r.code, 2, `${argv.join(" ") || "(nothing)"}: exit 2`);
    t.match(r.stderr, why, `${argv.join(" ") || "(nothing)"}: says why`);
    t.equal(r.stdout.length, 0, "nothing on stdout");
  }
});

t.test("authorized_keys.example: every key line forces the gate and is restricted", async (t) => {
  const { parseKeyLine, lineFaults, gateOf } = await import("../src/remote/keys.js");
  const text = fs.readFileSync(path.join(TOP, "authorized_keys.example"), "utf8");
  // The older spelling is commented out in the example (it is for old servers): check it too.
  const lines = text.split("\n").map((l) => l.replace(/^# (command=)/, "$1")).filter((l) => l.startsWith("command="));
  t.equal(lines.length, 3, "three example lines");
  for (const l of lines) {
    const k = parseKeyLine(l);
    t.ok(k && !("bad" in k), "parses as a key line");
    if (!k || "bad" in k) continue;
    t.same(lineFaults(k), [], "no fault that `check` would report");
    t.match(gateOf(k), { bin: "/opt/validate-backup/bin/validate-backup", config: /^\/etc\/validate-backup\/[a-z0-9-]+\.json$/ });
    t.match(l, /,from="[^"]+" ssh-ed25519 /, "names the addresses it is accepted from");
  }
  t.match(text, /command="[^"]+",restrict,from=/, "the modern line uses restrict");
  t.match(text, /no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding/, "and shows the older list");
});
