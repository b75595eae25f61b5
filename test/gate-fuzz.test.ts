// Fuzz the gate in-process: generated command lines (real rsync option words from the table, shell
// metacharacters, quotes, escapes, paths with '..', absolute paths, globs, Unicode) go through
// parseCommand + decide under three policies. Whatever is allowed must be a valid plan: paths inside
// the root, no refused rsync option (by the table, and by our own list from attacks.md, so a hole in
// the table is caught too), the access policy respected. Whatever is refused must be a VbError, never
// a crash. Reproducible: VB_FUZZ_SEED and VB_FUZZ_N choose the run (the seed is in the test name).
import path from "node:path";
import t from "tap";
import { parseCommand } from "../src/gate/command.js";
import { decide, type Plan } from "../src/gate/decide.js";
import { parseConfig } from "../src/config/load.js";
import { VbError } from "../src/errors.js";
import { vpath } from "../src/vault/paths.js";
import { Rng } from "./helpers/rng.js";
import { LONG_OPTIONS, SHORT_OPTIONS, CAPABILITIES, type OptionClass } from "../src/gate/rsync-args.js";
import type { Policy } from "../src/config/schema.js";

const SEED = Number(process.env.VB_FUZZ_SEED ?? 20240607) >>> 0;
const N = Number(process.env.VB_FUZZ_N ?? 12_000);
const ROOT = "/srv/vb/root";

const rng = new Rng(SEED);
const rand = () => rng.u32() / 4294967296;
const chance = (p: number) => rand() < p;
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const some = <T>(n: number, f: () => T): T[] => Array.from({ length: int(n + 1) }, f);

// --- Our own list, from attacks.md items 4-16 and issue 2: never passed to rsync, whatever the table says.
const NEVER_LONG = new Set(
  (
    "delete del delete-before delete-during delete-delay delete-after delete-excluded delete-missing-args force " +
    "remove-source-files remove-sent-files backup backup-dir suffix partial partial-dir delay-updates inplace append " +
    "append-verify temp-dir compare-dest copy-dest link-dest log-file log-file-format read-batch write-batch " +
    "only-write-batch daemon config files-from from0 filter exclude-from include-from copy-links copy-unsafe-links " +
    "copy-dirlinks keep-dirlinks copy-devices write-devices no-munge-links debug max-alloc iconv protect-args " +
    "secluded-args rsh remote-option rsync-path server sender"
  ).split(" "),
);
const NEVER_SHORT = new Set("s b P T K L k M f F 0".split(" "));

// --- Vocabulary.
const LONG = Object.keys(LONG_OPTIONS);
const LONG_ALLOWED = LONG.filter((n) => LONG_OPTIONS[n]!.kind !== "refuse");
const SHORT = Object.keys(SHORT_OPTIONS);
const REAL_BUNDLES = ["-vlogDtpre.iLsfxCIvu", "-vlogDtprze.iLsfxCIvu", "-de.LsfxCIvu", "-e.LsfxCIvu", "-re.iLsfxCIvu", "-logDtpre.iLsfxCIvu", "-vlogDtpr", "-svlogDtpre.iLsfxCIvu"];
const CAP_TAILS = ["e.iLsfxCIvu", "e31.iLsfxCIvu", "e.", "e", "evil", "e'sh -c id'", "e.iLs;id", "e.iLs/bin/sh", "e..", "e3", "e.iLsfxCIvu=x", "e.-x"];
const VALUES = ["0", "-1", "1", "99999", "1024", "1k", "1.5M", "x", "../x", "/etc", "/tmp", "d/existing.gpg", "%i%I", "X", "ALL", "UTF-8,latin1", "-", "", "a b", "zstd", "md5", "12345678901", "1e9", "\u00e9", "\u202e"];
const PATHS = [
  ".", "..", "../", "./", "d/", "d", "d/existing.gpg", "new/", "a b/", "d/../x", "d/../../x", "../x", "../../etc", "/", "/etc", "/etc/passwd",
  "/proc/self/environ", ROOT, `${ROOT}/`, `${ROOT}/d/`, `${ROOT}/../x`, `${ROOT}x`, `${ROOT}/./d/.`, "/srv/vb", "/srv/vb/root.state/tmp",
  "//srv//vb//root//d", "~", "~other/", "~/.ssh", "*", "d/*.gpg", "d/[ab]", "d/?", "-x", "--delete", "", "\u00fcn\u00ef/\u00e7\u00f8d\u00e9",
  "\u202egpg.exe", "d/\u2028x", "d\\ x", "%2e%2e/x", "d/.", "d/./../..", ".ssh/authorized_keys", "x".repeat(300), "a/".repeat(200),
];
// Paths a real client sends, so that a good share of the lines gets past the gate to be checked.
const INSIDE = [".", "./", "d/", "d", "d/existing.gpg", "new/", "a b/", "d/../x", `${ROOT}/`, `${ROOT}/d/`, "\u00fcn\u00ef/", "d/.", "sub/dir/vol1.difftar.gpg"];
const PROGRAMS = ["rsync", "rsync", "rsync", "rsync", "rsync", "rsync", "scp", "scp", "mkdir", "ls", "rm", "true", "/usr/lib/openssh/sftp-server", "internal-sftp",
  "sh", "bash", "sudo", "/usr/bin/rsync", "rrsync", "sftp-server", "env", "cat", "RSYNC", "__proto__", "tr\\ue"];
const META = [";", "|", "||", "&", "&&", ">", ">>", "<", "2>&1", "$(id)", "`id`", "$HOME", "${x}", "$'\\x2d'", "#", "~", "{a,b}", "(", ")", "\n", "\r", "\t", "\0",
  "'", '"', "\\", "*", "?", "[", "!", "=", "\u00a0", "\u2028", "\u3000", "\ufeff", "\ufffd", "\u001b[2J", "\u200f", "\ud83d\ude00"];

/** A value the option's pattern accepts, when one of ours does (so lines get past the gate). */
function valueFor(cls: OptionClass | undefined): string {
  const fits = cls?.kind === "value" ? VALUES.filter((v) => cls.pattern.test(v)) : [];
  return fits.length && chance(0.7) ? pick(fits) : pick(VALUES);
}

function longOption(): string[] {
  const r = rand();
  const name = r < 0.5 ? pick(LONG_ALLOWED) : r < 0.93 ? pick(LONG) : pick(["bogus", "del", "delete=", "no-delete", "delet", "DELETE", "sender", "server", "e", "rsh", ""]);
  const cls: OptionClass | undefined = Object.hasOwn(LONG_OPTIONS, name) ? LONG_OPTIONS[name] : undefined;
  const v = cls?.kind === "value" || chance(0.1) ? valueFor(cls) : undefined;
  if (v === undefined) return [`--${name}`];
  return chance(0.8) ? [`--${name}=${v}`] : [`--${name}`, v];
}

function shortOption(): string {
  if (chance(0.1)) return pick(REAL_BUNDLES);
  const letters = some(6, () => (chance(0.9) ? pick(SHORT) : pick(["e", "Z", "-", "=", "1"]))).join("");
  if (chance(0.15)) return `-${letters}${pick(CAP_TAILS)}`;
  const first = letters[0];
  if (first && SHORT_OPTIONS[first]?.kind === "value") return `-${first}${pick(VALUES)}`;
  return `-${letters}`;
}

function rsyncWords(): string[] {
  const w: string[] = [];
  if (chance(0.93)) w.push("--server");
  if (chance(0.4)) w.push("--sender");
  if (chance(0.9)) w.push(pick(REAL_BUNDLES.slice(0, 6)));
  for (let i = int(3); i > 0; i--) w.push(...(chance(0.6) ? longOption() : [shortOption()]));
  if (chance(0.03)) w.push("--");
  if (chance(0.92)) w.push(".");
  const path = () => (chance(0.6) ? pick(INSIDE) : pick(PATHS));
  w.push(path());
  if (chance(0.15)) w.push(path());
  return w;
}

function otherWords(program: string): string[] {
  switch (program) {
    case "scp":
      return [...some(2, () => pick(["-t", "-f", "-r", "-p", "-d", "-v", "-rt", "-pf", "-S", "/bin/sh", "-oProxyCommand=id", "-F", "-3", "--"])), ...some(2, () => pick(PATHS))];
    case "mkdir":
    case "ls":
    case "rm":
      return [...some(2, () => pick(["-p", "-1", "-rf", "--", "--parents", "-x"])), ...some(2, () => pick(PATHS))];
    case "/usr/lib/openssh/sftp-server":
    case "internal-sftp":
      return some(3, () => pick(["-l", "INFO", "-f", "AUTH", "-e", "-d", "/", "-R", "-u", "000", "-P", "open", "../x"]));
    default:
      return some(3, () => pick([...PATHS, ...VALUES]));
  }
}

/** How sh would have to see the word: bare, quoted one way or another, or escaped. */
function quote(word: string): string {
  switch (int(6)) {
    case 0:
      return `'${word}'`;
    case 1:
      return `"${word}"`;
    case 2:
      return word.replace(/([ '"\\])/g, "\\$1");
    case 3:
      return word.length > 1 ? `${word.slice(0, 1)}''${word.slice(1)}` : word;
    default:
      return word;
  }
}

function commandLine(): string {
  const program = pick(PROGRAMS);
  const words = [program, ...(program === "rsync" ? rsyncWords() : otherWords(program))];
  let parts = words.map((w) => (chance(0.15) ? quote(w) : w));
  if (chance(0.15)) {
    const at = int(parts.length + 1);
    parts = [...parts.slice(0, at), pick(META), ...parts.slice(at)];
  }
  if (chance(0.07)) {
    const i = int(parts.length);
    const w = parts[i]!;
    const at = int(w.length + 1);
    parts[i] = w.slice(0, at) + pick(META) + w.slice(at);
  }
  return parts.join(chance(0.05) ? "  " : " ");
}

// --- The invariants of an allowed plan.
// Inside the root by node's own path arithmetic, not by the Confiner the gate uses: an oracle must
// not share the code it checks. (The Confiner is stricter: '..' may not climb out even for a moment.)
function inside(p: string): string | undefined {
  const abs = path.posix.resolve(ROOT, p);
  return abs === ROOT || abs.startsWith(`${ROOT}/`) ? undefined : `path '${p}' is outside the root (${abs})`;
}

function checkLong(word: string, sender: boolean): string | undefined {
  const eq = word.indexOf("=");
  const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
  const val = eq < 0 ? undefined : word.slice(eq + 1);
  if (NEVER_LONG.has(name)) return `never-allowed option --${name} passed on`;
  const cls = Object.hasOwn(LONG_OPTIONS, name) ? LONG_OPTIONS[name] : undefined;
  if (!cls || cls.kind === "refuse") return `--${name} is refused by the table but passed on`;
  if (cls.side === (sender ? "push" : "pull")) return `--${name} passed on the wrong side`;
  if (cls.kind === "flag" && val !== undefined) return `flag --${name} passed with a value`;
  if (cls.kind === "value" && (val === undefined || !cls.pattern.test(val))) return `--${name} passed with a bad value '${val}'`;
  if (name === "max-delete" && Number(val) > 0) return `--max-delete=${val} allows deletions`;
  return undefined;
}

function checkShort(word: string, sender: boolean): string | undefined {
  const letter = word[1] ?? "";
  const cls = Object.hasOwn(SHORT_OPTIONS, letter) ? SHORT_OPTIONS[letter] : undefined;
  if (cls?.kind === "value") return NEVER_SHORT.has(letter) || !cls.pattern.test(word.slice(2)) ? `bad -${letter} value in '${word}'` : undefined;
  const e = word.indexOf("e");
  const letters = e < 0 ? word.slice(1) : word.slice(1, e);
  const caps = e < 0 ? "" : word.slice(e);
  for (const ch of letters) {
    const c = Object.hasOwn(SHORT_OPTIONS, ch) ? SHORT_OPTIONS[ch] : undefined;
    if (NEVER_SHORT.has(ch) || !c || c.kind !== "flag") return `letter -${ch} of '${word}' is refused but passed on`;
    if (c.side === (sender ? "push" : "pull")) return `letter -${ch} passed on the wrong side`;
  }
  if (caps && !(CAPABILITIES.test(caps) && /^e\d*\.[A-Za-z]*$/.test(caps))) return `'${word}' carries more than a capability string`;
  return undefined;
}

function violations(plan: Plan, policy: Policy, raw: string): string[] {
  const out: (string | undefined)[] = [];
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f$`]/.test(raw)) out.push("allowed a command with control characters, $ or `");
  switch (plan.kind) {
    case "true":
      if (raw.replace(/['"\\]/g, "").trim() !== "true") out.push("true with something else");
      break;
    case "sftp":
      break;
    case "rsync": {
      const r = plan.rsync;
      if (r.sender && policy.pull === false && policy.access === "append-only") out.push("pull allowed with pull: false");
      if (!r.sender && policy.access === "read-only") out.push("push allowed in read-only mode");
      if (r.paths.length === 0 || (!r.sender && r.paths.length !== 1)) out.push(`wrong number of paths: ${r.paths.length}`);
      if (r.targets.length !== r.paths.length) out.push("paths and targets differ in number");
      for (const p of r.paths) out.push(inside(p), p.startsWith("-") ? `path '${p}' looks like an option` : undefined);
      for (const tg of r.targets) if (tg.v.comps.some((c) => c === ".." || c === "." || c === "" || c.includes("/"))) out.push(`bad component in ${tg.v.display}`);
      let caps = 0;
      for (const o of r.options) {
        if (/[\s\u0000-\u001f]/.test(o)) out.push(`option word '${o}' holds whitespace or a control character`);
        if (o.startsWith("--")) out.push(checkLong(o, r.sender));
        else if (o.startsWith("-") && o.length > 1) {
          out.push(checkShort(o, r.sender));
          if (SHORT_OPTIONS[o[1]!]?.kind !== "value" && o.includes("e")) caps++;
        } else out.push(`'${o}' is not an option word`);
      }
      if (caps > 1) out.push("more than one capability string");
      break;
    }
    case "scp":
      if (plan.scp.direction === "sink" && policy.access === "read-only") out.push("scp upload in read-only mode");
      if (plan.scp.direction === "source" && policy.pull === false && policy.access === "append-only") out.push("scp download with pull: false");
      for (const p of plan.scp.paths) out.push(inside(p));
      break;
    case "mkdir":
      if (policy.access === "read-only") out.push("mkdir in read-only mode");
      out.push(inside(plan.mkdir.dir));
      break;
    case "ls":
      out.push(inside(plan.ls.path));
      break;
  }
  return out.filter((x): x is string => x !== undefined);
}

const POLICIES: Policy[] = [{}, { pull: false }, { access: "read-only" }, { protocols: ["rsync"] }].map((extra) =>
  parseConfig(JSON.stringify({ label: "fuzz", root: ROOT, audit: { file: "/srv/vb/audit.log" }, ...extra }), "/srv/vb/fuzz.json"),
);

t.test(`${N} generated command lines (seed ${SEED})`, async (t) => {
  const allowed: Record<string, number> = {};
  const problems: string[] = [];
  const crashes: string[] = [];
  let refusedCount = 0;
  const started = Date.now();
  for (let i = 0; i < N; i++) {
    const raw = commandLine();
    const policy = pick(POLICIES);
    let plan: Plan;
    try {
      plan = decide(parseCommand(raw), policy);
    } catch (e) {
      if (e instanceof VbError && e.message.length > 0) refusedCount++;
      else crashes.push(`${JSON.stringify(raw)}: ${(e as Error)?.stack ?? String(e)}`);
      continue;
    }
    allowed[plan.kind] = (allowed[plan.kind] ?? 0) + 1;
    for (const v of violations(plan, policy, raw)) problems.push(`${JSON.stringify(raw)} [${JSON.stringify(policy.access)} pull=${policy.pull}]: ${v}`);
  }
  t.comment(`allowed ${JSON.stringify(allowed)}, refused ${refusedCount}, in ${Date.now() - started} ms`);
  t.same(crashes.slice(0, 10), [], `no refusal other than a VbError (${crashes.length} crashes)`);
  t.same(problems.slice(0, 20), [], `every allowed plan is valid (${problems.length} problems)`);
  if (problems.length) t.comment(`kinds: ${[...new Set(problems.map((p) => p.replace(/^.*\]: /, "").replace(/'.*'/, "'…'")))].join("; ")}`);
  // A fuzzer that never gets past the gate proves nothing: enough lines must be allowed.
  t.ok((allowed.rsync ?? 0) >= N / 100, `at least 1% allowed rsync plans (${allowed.rsync ?? 0})`);
  t.ok(Object.keys(allowed).length >= 3, `several kinds allowed (${Object.keys(allowed).join(", ")})`);
});

t.test("the oracle itself catches what it must", async (t) => {
  // Plans the gate would never build, to prove the checks above are not vacuous.
  const policy = POLICIES[0]!;
  const target = (p: string) => ({ v: vpath(p.split("/").filter((c) => c && c !== ".")), slash: false });
  const bad = (options: string[], paths: string[], sender = false): Plan => ({ kind: "rsync", rsync: { sender, options, paths, targets: paths.filter((p) => !inside(p)).map(target) } });
  t.ok(violations(bad(["--delete"], ["d/"]), policy, "x").length, "--delete");
  t.ok(violations(bad(["--max-delete=5"], ["d/"]), policy, "x").length, "--max-delete=5");
  t.ok(violations(bad(["-vlogDtpre.iLs;id"], ["d/"]), policy, "x").length, "a shell after e");
  t.ok(violations(bad(["-svlogDtpr"], ["d/"]), policy, "x").length, "-s");
  t.ok(violations(bad(["-vlogDtpr"], ["../x"]), policy, "x").length, "outside the root");
  t.ok(violations(bad(["-vlogDtpr"], ["d/", "e/"]), policy, "x").length, "two destinations");
  t.same(violations(bad(["-vlogDtpre.iLsfxCIvu", "--ignore-existing", "--max-delete=-1"], ["d/"]), policy, "x"), [], "a real push is fine");
});
