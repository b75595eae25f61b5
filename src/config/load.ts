import fs from "node:fs";
import path from "node:path";
import { ConfigSchema, type Policy } from "./schema.js";
import { VbError } from "../errors.js";
import { jsonFault } from "./json-syntax.js";

const MAX_CONFIG_BYTES = 64 * 1024;

function bad(file: string, why: string): VbError {
  return new VbError("BAD_REQUEST", `config ${file}: ${why}`);
}

function within(parent: string, child: string): boolean {
  return child === parent || child.startsWith(parent + "/");
}

/**
 * A config's text as JSON, or the one refusal every reader gives (the gate, check, install-remote):
 * the line and column where it stops being JSON, and what was expected there.
 */
export function parseConfigJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    const f = jsonFault(text);
    throw bad(file, f ? `not valid JSON: line ${f.line}, column ${f.column}: ${f.why}` : "not valid JSON");
  }
}

/** Parse and validate a config text. Pure: no filesystem checks (see checkPlaces). */
export function parseConfig(text: string, file: string): Policy {
  const json = parseConfigJson(text, file);
  const r = ConfigSchema.safeParse(json);
  if (!r.success) {
    const first = r.error.issues
      .slice(0, 5)
      .map((i) => {
        const key = i.path.length ? i.path.join(".") : "(top level)";
        const unknown = i.code === "unrecognized_keys" ? `unknown key(s) ${i.keys.map((k) => `'${k}'`).join(", ")}` : i.message;
        return `key '${key}': ${unknown}`;
      })
      .join("; ");
    throw bad(file, first);
  }
  const c = r.data;
  const state = c.state ?? `${c.root}.state`;
  if (within(c.root, state) || within(state, c.root)) throw bad(file, "key 'state': must lie outside 'root' (and not contain it)");
  if (within(c.root, c.audit.file)) throw bad(file, "key 'audit.file': must lie outside 'root'");
  if (within(state, c.audit.file)) throw bad(file, "key 'audit.file': must lie outside 'state'");
  const label = c.label ?? path.basename(file).replace(/\.json$/, "").replace(/[^A-Za-z0-9._@-]/g, "_").slice(0, 64);
  return { ...c, label, state, configPath: file };
}

export function loadConfig(file: string): Policy {
  if (!path.isAbsolute(file)) throw bad(file, "the --config path must be absolute");
  let text: string;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw bad(file, "not a regular file");
      if (st.size > MAX_CONFIG_BYTES) throw bad(file, "larger than 64 KiB");
      text = fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof VbError) throw e;
    throw bad(file, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseConfig(text, file);
}

/** Filesystem facts the schema cannot check: both directories exist and share a filesystem. */
export function checkPlaces(p: Policy): { rootReal: string; dev: number } {
  let rootReal: string;
  let rootSt: fs.Stats;
  try {
    rootReal = fs.realpathSync(p.root);
    rootSt = fs.statSync(rootReal);
  } catch (e) {
    throw bad(p.configPath, `key 'root': ${p.root} is not usable (${(e as NodeJS.ErrnoException).code})`);
  }
  if (!rootSt.isDirectory()) throw bad(p.configPath, `key 'root': ${p.root} is not a directory`);
  let stateSt: fs.Stats;
  try {
    stateSt = fs.lstatSync(p.state);
  } catch (e) {
    throw bad(p.configPath, `key 'state': ${p.state} is not usable (${(e as NodeJS.ErrnoException).code})`);
  }
  if (!stateSt.isDirectory()) throw bad(p.configPath, `key 'state': ${p.state} is not a directory (symbolic links are refused)`);
  if (stateSt.dev !== rootSt.dev) throw bad(p.configPath, `key 'state': ${p.state} must be on the same filesystem as the root`);
  const stateReal = fs.realpathSync(p.state);
  if (within(rootReal, stateReal) || within(stateReal, rootReal)) throw bad(p.configPath, "key 'state': must lie outside 'root'");
  return { rootReal, dev: rootSt.dev };
}
