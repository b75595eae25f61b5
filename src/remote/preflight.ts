// What install-remote's plan cannot express and check must still find: a backup root and its state
// on two filesystems, key lines sshd would use without our gate, and a key (or label) about to be
// moved to another root. Each as a Change (check and the dry run report it) or a refusal.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";
import { loadConfig, parseConfigJson } from "../config/load.js";
import { parseKeyLine, lineFaults, gateOf, type PublicKey } from "./keys.js";
import { canonical, readText } from "./fsops.js";
import type { Change } from "./change.js";

/** The device a path is on, or the one it will be made on (its nearest existing parent's). */
function deviceOf(p: string): { dev: number; at: string } {
  for (let q = p; ; q = path.dirname(q)) {
    try {
      return { dev: fs.statSync(q).dev, at: q };
    } catch {
      if (q === "/") throw new VbError("IO", `${p}: no existing directory above it`);
    }
  }
}

function isMountPoint(p: string): boolean {
  try {
    return fs.statSync(p).dev !== fs.statSync(path.dirname(p)).dev;
  } catch {
    return false;
  }
}

const WHY_ONE_FS = "each upload is staged in the state and published into the root by link(2), which cannot cross filesystems: every session would be refused";

function splitWhat(label: string, root: string, state: string): string | undefined {
  const r = deviceOf(root);
  const s = deviceOf(state);
  if (r.dev === s.dev) return undefined;
  const mounted = [root, state].find((p) => isMountPoint(p));
  const mount = mounted ? ` (${mounted} is a mount point)` : "";
  return `[${label}] the backup root ${root} and its state ${state} are on different filesystems${mount}: ${WHY_ONE_FS}`;
}

const SPLIT_FIX = (root: string) => `mount the filesystem at ${path.dirname(root)} (so the root and ${path.basename(root)}.state both lie on it), or choose a --root whose parent is on the same filesystem as the root`;

/** install-remote: refuse a root and state that can never serve a session. */
export function refuseSplitPlaces(label: string, root: string, state: string): void {
  const what = splitWhat(label, root, state);
  if (what) throw new VbError("BAD_REQUEST", `${what}. Nothing was changed. Fix: ${SPLIT_FIX(root)}`);
}

/** check: the same fact for what is installed. */
export function placeFindings(sources: { label: string; root: string; state: string }[]): Change[] {
  return sources.flatMap((s) => {
    const what = splitWhat(s.label, s.root, s.state);
    return what ? [{ what, fix: SPLIT_FIX(s.root) }] : [];
  });
}

/**
 * Every key line sshd would use and what is wrong with it (a line that does not force our gate or
 * lacks 'restrict' gives its holder whatever sshd allows). `except`: the key being installed, whose
 * line the plan replaces.
 */
export function keyLineFindings(akPath: string, text: string, except?: PublicKey): Change[] {
  const out: Change[] = [];
  text.split("\n").forEach((raw, i) => {
    const k = parseKeyLine(raw);
    if (!k) return;
    const where = `${akPath} line ${i + 1}`;
    if ("bad" in k) return void out.push({ what: `${where}: not a key line sshd would use ('${k.bad}')`, fix: "remove it" });
    if (except && k.blob === except.blob) return;
    for (const f of lineFaults(k)) out.push({ what: `${where} (${k.type} …${k.blob.slice(-8)} ${k.comment}): ${f}`, fix: "remove the line, or re-add the key with validate-backup install-remote --key" });
  });
  return out;
}

/** Where a config puts its key: its label and root, or why they cannot be told. */
function placeOf(config: string): string {
  try {
    const p = loadConfig(config);
    return `'${p.label}' (${config}, root ${p.root})`;
  } catch (e) {
    return `${config} (${(e as Error).message})`;
  }
}

/**
 * A key already installed under another label, or a label already bound to another root: the plan
 * would move the key (or every key of the label) there, leaving the old backups, log and schedule
 * without it. Said, and done only with --rebind. Returns what --rebind does, to be printed.
 */
export function rebinding(o: { label: string; root: string; rebind: boolean }, config: string, akText: string, key: PublicKey): string[] {
  const moves: string[] = [];
  for (const raw of akText.split("\n")) {
    const k = parseKeyLine(raw);
    const gate = k && !("bad" in k) && k.blob === key.blob ? gateOf(k) : null;
    if (gate && gate.config !== config) moves.push(`this key is installed as ${placeOf(gate.config)}; it would be moved to '${o.label}' (root ${o.root}), and stop reaching its old backups`);
  }
  const old = readText(config);
  if (old !== null) {
    // The root as the file names it, even where the schema refuses the rest: install-remote's merge
    // rewrites some settings (access, audit.file) and may make such a config valid, moving its root.
    let root: string | undefined;
    try {
      const named = (parseConfigJson(old, config) as { root?: unknown } | null)?.root;
      if (typeof named === "string") root = path.isAbsolute(named) ? canonical(named) : named;
    } catch {
      /* not JSON: configContent refuses it with its reason */
    }
    if (root !== undefined && root !== o.root) moves.push(`the label '${o.label}' (${config}) has the root ${root}; every key of it would be moved to ${o.root}, and stop reaching the backups in ${root}`);
  }
  if (!moves.length) return [];
  if (!o.rebind)
    throw new VbError(
      "BAD_REQUEST",
      `${moves.join("; ")}. Nothing was changed. Give --rebind to move it (the old backups and their audit log stay where they are; validate-backup remove-key --label OLD takes away a label no key uses any more), or the same --label and --root as before to update the key in place.`,
    );
  return moves.map((m) => `rebinding (--rebind): ${m}`);
}
