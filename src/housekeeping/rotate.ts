// `validate-backup audit --rotate --config F`: the log moves to LOG.1 (older ones to .2, .3, …) and
// a new LOG starts with one line whose chain field is the hash of LOG.1's last line, so
// `audit --verify` checks the chain across both files. The switch happens under the sessions' own
// audit lock (a writer that still holds the old file follows the name, log.ts), in a few system
// calls: the lock is only ours for as long as other processes wait for it. LOG.1 is then sealed:
// root-owned 0440, append-only again where the log was (chattr +a). Nothing is deleted: old logs
// are evidence, the admin removes them.
import fs from "node:fs";
import path from "node:path";
import { withLock, tryLock, unlock } from "../lock.js";
import { at, closeQuietly } from "../fsat.js";
import { VbError } from "../errors.js";
import { toVbError } from "../handler.js";
import { chainLine, tailHash, rotatedName, recordHead, defaultHeadFile, sameFile } from "../audit/chain.js";
import { ROOT_CLIENT } from "../audit/log.js";
import { auditLine, members } from "../audit/line.js";
import { visible } from "../audit/sanitize.js";
import { appendOnly } from "../remote/apply.js";
import { mustTool } from "../remote/system.js";
import { open, main, requireRoot, EXIT } from "./context.js";

const C = fs.constants;

/**
 * Where a run notes, before it lifts the first chattr +a, that it is about to: a run killed before
 * it put a flag back leaves nothing else that says so (lsattr only shows the flag missing, as on a
 * log that never had it). The next run that finds the note puts the flag back on the log and on
 * every rotated log: the note is written only when a log had the flag. Its content is not read;
 * one planted by hand can only make the logs append-only.
 */
const liftNote = (log: string) => `${log}.flags-lifted`;

/**
 * chattr +a forbids rename: lift it around `fn`, and put it back on `after` (the name the file then
 * has), or on `file` when `fn` failed: a failed rotation must not leave a log without its flag. When
 * both fail, the admin hears both, `fn`'s error first: it is why the rotation stopped.
 */
function lifted(log: string, file: string, fn: () => void, after = file): boolean {
  const a = appendOnly(file) === true;
  if (a) {
    noteLifting(log);
    mustTool("chattr", ["-a", file]);
  }
  let failed: VbError | undefined;
  try {
    fn();
  } catch (e) {
    failed = toVbError(e);
  }
  const flagged = failed ? file : after;
  try {
    if (a) mustTool("chattr", ["+a", flagged]);
  } catch (e) {
    const why = `${toVbError(e).message}: ${flagged} is no longer append-only, put the flag back: chattr +a ${flagged}`;
    throw new VbError(failed?.code ?? "IO", failed ? `${failed.message}; then ${why}` : why);
  }
  if (failed) throw failed;
  return a;
}

/** The note, on disk (its directory entry too) before any flag is lifted. */
function noteLifting(log: string): void {
  const note = liftNote(log);
  if (fs.lstatSync(note, { throwIfNoEntry: false })) return; // whatever stands there is never opened
  const fd = fs.openSync(note, C.O_WRONLY | C.O_CREAT | C.O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, `audit --rotate (pid ${process.pid}) lifts chattr +a of ${log} and its rotated logs while it moves them\n`);
    fs.fsyncSync(fd);
  } finally {
    closeQuietly(fd);
  }
  const dir = fs.openSync(path.dirname(note), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
  try {
    fs.fsyncSync(dir);
  } finally {
    closeQuietly(dir);
  }
}

/** The log and its rotated logs (LOG.1, LOG.2, …: as far as the numbers go on, one gap allowed). */
function allLogs(log: string): string[] {
  const out = [log];
  for (let n = 1; fs.existsSync(`${log}.${n}`) || fs.existsSync(`${log}.${n + 1}`); n++) if (fs.existsSync(`${log}.${n}`)) out.push(`${log}.${n}`);
  return out.filter((f) => fs.lstatSync(f).isFile());
}

/** A killed run's note: the flag goes back on every log (true), before anything moves. */
function restoreLifted(log: string, say: (s: string) => void): boolean {
  const note = liftNote(log);
  if (!fs.lstatSync(note, { throwIfNoEntry: false })) return false;
  // A run that failed (not killed) put its flags back and left the note: then nothing is missing.
  const missing = allLogs(log).filter((f) => appendOnly(f) !== true);
  for (const f of missing) mustTool("chattr", ["+a", f]);
  if (missing.length) say(`a killed audit --rotate had lifted the append-only flag (chattr +a) of audit logs: it was put back on ${missing.join(", ")}`);
  return true;
}

/** A rename that fails (EEXIST) rather than replace a file at the new name: a rotated log is never lost. */
function moveNoReplace(from: string, to: string): void {
  fs.linkSync(from, to);
  fs.unlinkSync(from);
}

/** Whether the names `a` and `b` are one file (neither a link). */
const sameName = (a: string, b: string) => sameFile(fs.lstatSync(a, { throwIfNoEntry: false }), fs.lstatSync(b, { throwIfNoEntry: false }));

/**
 * A run killed between the link(2) and the unlink(2) of a move left one file under two names. The
 * log as LOG.1 too: that name goes (the log is the live file, its lines since then belong to it, and
 * this run rotates it). LOG.N as LOG.N+1 too: LOG.N goes, which finishes the move (the shift below
 * fills the gap). Either way only a name is removed, never a file. The admin hears what was done
 * at once: the rotation after it may still fail.
 */
function finishInterrupted(log: string, say: (s: string) => void, restored: boolean): void {
  // Runs of this version leave a note when they lift a flag (restoreLifted); an older one did not.
  const flag = (files: string) =>
    restored ? "the flags it had lifted are back" : `if the log was append-only and an older version was killed here, put the flag back with chattr +a ${files}`;
  const one = `${log}.1`;
  if (sameName(log, one)) {
    lifted(log, one, () => fs.unlinkSync(one), log);
    say(`an interrupted audit --rotate had left ${log} also named ${one}: that name was removed (${flag(`${log} ${one}`)} once this run is done)`);
  }
  // A gap of one name at most: the one just removed, or one an earlier repair left.
  for (let n = 1; fs.existsSync(`${log}.${n}`) || fs.existsSync(`${log}.${n + 1}`); n++) {
    const [lower, upper] = [`${log}.${n}`, `${log}.${n + 1}`];
    if (!sameName(lower, upper)) continue;
    lifted(log, lower, () => fs.unlinkSync(lower), upper);
    say(`an interrupted audit --rotate had left ${upper} also named ${lower}: its move to ${upper} was finished (${flag(upper)})`);
  }
}

export interface Rotation {
  log: string;
  rotated: string;
  /** How many older rotated files moved one number up. */
  shifted: number;
  /** The rotated file's size and the hash of its last line, which the new log's line 1 links to. */
  bytes: number;
  head: string;
  lines: number;
}

/** `say`: what was repaired of an interrupted earlier run, told as it is done. */
export async function rotate(log: string, lockFile: string, label: string, sid: string, say: (s: string) => void = () => {}): Promise<Rotation> {
  const st = fs.lstatSync(log);
  if (!st.isFile()) throw new VbError("IO", `${log} is not a regular file`);
  const rotated = rotatedName(log);
  const restored = restoreLifted(log, say);
  finishInterrupted(log, say, restored);
  // Make room: .N -> .N+1 from the top. Nobody writes them (writers follow the name).
  let top = 1;
  while (fs.existsSync(`${log}.${top}`)) top++;
  for (let n = top - 1; n >= 1; n--) lifted(log, `${log}.${n}`, () => moveNoReplace(`${log}.${n}`, `${log}.${n + 1}`), `${log}.${n + 1}`);

  // The new log, made beside the old one with its owner and mode (the sessions append to it).
  const fresh = `${log}.rotating`;
  fs.rmSync(fresh, { force: true }); // a run killed midway left it: it never was the log
  const fd = fs.openSync(fresh, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  let bytes = 0;
  let head = "";
  let wasAppendOnly = false;
  try {
    fs.fchownSync(fd, st.uid, st.gid);
    fs.fchmodSync(fd, st.mode & 0o777);
    withLock(lockFile, () => {
      const old = fs.openSync(log, C.O_RDONLY | C.O_NOFOLLOW);
      try {
        bytes = fs.fstatSync(old).size;
        head = tailHash(old, bytes).hash;
      } finally {
        closeQuietly(old);
      }
      const first = auditLine("info", Date.now(), members({ label, sid, client: ROOT_CLIENT }), { from: rotated, bytes }, "rotate");
      fs.writeSync(fd, chainLine(first, head));
      fs.fsyncSync(fd);
      wasAppendOnly = lifted(log, log, () => moveNoReplace(log, rotated), rotated);
      try {
        fs.renameSync(fresh, log);
      } catch (e) {
        // Left so, the log would be missing: the next session would start a new chain, which
        // nothing ties to the rotated one. The log goes back where it was.
        try {
          lifted(log, rotated, () => moveNoReplace(rotated, log), log);
        } catch (undo) {
          throw new VbError("IO", `${toVbError(e).message}; moving ${rotated} back to ${log} failed too (${toVbError(undo).message}): move it back by hand (ln ${rotated} ${log} && rm ${rotated})`);
        }
        throw e;
      }
      // mustHold: without the lock a session could append after the head was read, and the new
      // log's first line would link to a line that is not the rotated file's last.
    }, undefined, true);
  } catch (e) {
    fs.rmSync(fresh, { force: true });
    // The shift is done and stays: say so, or the admin looks for the missing .1.
    if (top > 1 && !fs.existsSync(rotated)) throw new VbError(toVbError(e).code, `${toVbError(e).message}; the rotated logs were already moved one number up (${rotated} is now ${log}.2): audit --verify accepts this, and the next audit --rotate finishes it`);
    throw e;
  } finally {
    closeQuietly(fd);
  }
  if (wasAppendOnly) mustTool("chattr", ["+a", log]);
  // Sealed: no one but root changes the rotated log again (chmod and chown of a +a file need the flag lifted).
  lifted(log, rotated, () => {
    fs.chownSync(rotated, 0, st.gid);
    fs.chmodSync(rotated, 0o440);
  });
  // Every flag is back: the note goes (a run that failed before here leaves it for the next one).
  fs.rmSync(liftNote(log), { force: true });
  // Both heads on record: the rotated file's last line (a truncation of it shows) and the new log's.
  const headFile = defaultHeadFile(log);
  const done = await recordHead(rotated, headFile, { current: false });
  await recordHead(log, headFile);
  return { log, rotated, shifted: top - 1, bytes, head, lines: done.result.lines };
}

export async function rotateMain(config: string): Promise<number> {
  return main("audit --rotate", async () => {
    requireRoot("audit --rotate", "it seals the rotated log root-owned");
    const h = open(config, "rotate");
    try {
      const sid = `rotate-${process.pid}`;
      // One rotation at a time: two at once would each move the files up a number, and a move onto
      // a rotated log that is already there would replace it.
      const runLock = at(h.locksFd, "rotate.lock");
      if (!tryLock(runLock)) throw new VbError("IO", `another audit --rotate of ${h.policy.label} is running (${runLock}); nothing was moved`);
      const say = (s: string) => process.stdout.write(visible(s) + "\n");
      let r: Rotation;
      try {
        r = await rotate(h.policy.audit.file, at(h.locksFd, "audit.lock"), h.policy.label, sid, say);
      } finally {
        unlock(runLock);
      }
      if (r.shifted) say(`moved ${r.shifted} older rotated log(s) one number up`);
      say(`rotated ${r.log} to ${r.rotated} (${r.lines} lines, sealed root-owned 0440); the new log's first line links to its last (${r.head.slice(0, 16)}…)`);
      say(`check both with: validate-backup audit --verify --config ${config}`);
      return EXIT.ok;
    } finally {
      h.close();
    }
  });
}
