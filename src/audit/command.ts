// `validate-backup audit`: the review (review.ts, printed by render.ts), `--verify` of the hash chain
// across the rotated file and the current one, `--record-head` (root's timer) and `--rotate`.
import fs from "node:fs";
import { verifyChain, recordHead, defaultHeadFile, type VerifyResult } from "./chain.js";
import { Reviewer, parseAge, parseSince, DEFAULT_MAX_GAP_MS, type Review } from "./review.js";
import { render } from "./render.js";
import { visible, visibleJson } from "./sanitize.js";
import { usageText } from "../usage.js";


interface Options {
  files: string[];
  configs: string[];
  since?: number;
  denied: boolean;
  json: boolean;
  maxGapMs: number;
  mode: "review" | "verify" | "record-head" | "rotate";
  head?: string;
}

type Setter = (o: Options, v: string) => string | void;
const WITH_VALUE: Record<string, Setter> = {
  "--file": (o, v) => void o.files.push(v),
  "--config": (o, v) => {
    try {
      const file = (JSON.parse(fs.readFileSync(v, "utf8")) as { audit?: { file?: unknown } }).audit?.file;
      if (typeof file !== "string") return `${v} has no audit.file`;
      o.files.push(file);
      o.configs.push(v);
    } catch (e) {
      return `${v}: ${(e as Error).message}`;
    }
  },
  "--since": (o, v) => {
    const t = parseSince(v, Date.now());
    if (t === null) return `--since: '${v}' is neither a date nor an age such as 7d`;
    o.since = t;
  },
  "--max-gap": (o, v) => {
    const ms = parseAge(v);
    if (ms === null) return `--max-gap: '${v}' is not an age such as 26h`;
    o.maxGapMs = ms;
  },
  "--head": (o, v) => void (o.head = v),
};
const FLAGS: Record<string, (o: Options) => void> = {
  "--denied": (o) => void (o.denied = true),
  "--json": (o) => void (o.json = true),
  "--verify": (o) => void (o.mode = "verify"),
  "--record-head": (o) => void (o.mode = "record-head"),
  "--rotate": (o) => void (o.mode = "rotate"),
};

function parseArgs(args: string[]): Options | string {
  const o: Options = { files: [], configs: [], denied: false, json: false, maxGapMs: DEFAULT_MAX_GAP_MS, mode: "review" };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (Object.hasOwn(FLAGS, a)) FLAGS[a]!(o);
    else if (Object.hasOwn(WITH_VALUE, name)) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) return `${name} needs a value`;
      const err = WITH_VALUE[name]!(o, v);
      if (err) return err;
    } else return `unknown argument '${visible(a.slice(0, 64))}'`;
  }
  if (!o.files.length) return "which log? give --file LOG or --config F";
  if (o.head && o.files.length > 1) return "--head goes with one log only";
  // The rotation takes the sessions' lock, which lives in the key's state directory: the config names it.
  if (o.mode === "rotate" && (o.configs.length !== 1 || o.files.length !== 1)) return "--rotate goes with one --config F (and no --file)";
  return o;
}

function chainSummary(r: VerifyResult): string {
  if (r.problems.length) return `BROKEN: ${r.problems.length} problem(s), run audit --verify`;
  return `intact${r.heads ? `, ${r.heads} recorded head(s) present` : ", no recorded head"}`;
}

/** The review of these logs as data (the command prints it; monitoring may use it as it is). */
export async function reviewLogs(files: string[], opts: { since?: number; maxGapMs?: number; head?: string } = {}): Promise<Review> {
  const rv = new Reviewer(opts.since, opts.maxGapMs ?? DEFAULT_MAX_GAP_MS);
  const out: Review["files"] = [];
  for (const file of files) {
    const res = await verifyChain(file, opts.head ?? defaultHeadFile(file), (_line, json) => json && rv.line(json));
    out.push({ file, lines: res.lines, chain: chainSummary(res) });
  }
  return rv.finish(out);
}

async function review(o: Options): Promise<number> {
  const r = await reviewLogs(o.files, o);
  const { files, since, refusalCount, refusalsUnlogged, refusalSummary, refusals } = r;
  if (o.json) process.stdout.write(visibleJson(o.denied ? { files, since, refusalCount, refusalsUnlogged, refusalSummary, refusals } : r, 2) + "\n");
  else process.stdout.write(render(r, o.denied) + "\n");
  return 0;
}

async function verify(o: Options): Promise<number> {
  let bad = 0;
  const say = (s: string) => process.stdout.write(visible(s) + "\n");
  for (const file of o.files) {
    const headFile = o.head ?? defaultHeadFile(file);
    const r = o.mode === "record-head" ? (await recordHead(file, headFile)).result : await verifyChain(file, headFile);
    for (const earlier of r.earlier ?? []) say(`audit log ${earlier.file}: ${earlier.lines} lines, its last line is where ${file} goes on`);
    say(`audit log ${file}: ${r.lines} lines, chain head ${r.head.slice(0, 16)}…, ${r.heads} recorded head(s) checked (${headFile})`);
    for (const n of r.notes) say(`  note: ${n}`);
    for (const p of r.problems) say(`  ${p.line ? `line ${p.line}: ` : ""}${p.what}`);
    if (o.mode === "record-head") say(`  recorded: line ${r.lines}, ${r.head}`);
    bad += r.problems.length;
  }
  process.stdout.write(bad ? `audit --verify: ${bad} problem(s)\n` : "audit --verify: OK\n");
  return bad ? 1 : 0;
}

export async function auditMain(args: string[]): Promise<number> {
  const o = parseArgs(args);
  if (typeof o === "string") {
    process.stderr.write(`validate-backup audit: ${o}\n${usageText("audit")}\n`);
    return 2;
  }
  try {
    if (o.mode === "rotate") return await (await import("../housekeeping/rotate.js")).rotateMain(o.configs[0]!);
    return o.mode === "review" ? await review(o) : await verify(o);
  } catch (e) {
    process.stderr.write(`validate-backup audit: ${visible((e as Error).message)}\n`);
    return 2;
  }
}
