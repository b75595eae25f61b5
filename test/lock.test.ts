// src/lock.ts in-process: who holds a lock, when a lock is broken, and withLock's bounded wait.
import t, { type Test } from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { tryLock, unlock, withLock, lockByLink } from "../src/lock.js";

function startOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
}

function dir(t: Test): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "vb-lock-"));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test("take, refuse while held, release", async (t) => {
  const f = path.join(dir(t), "a.lock");
  t.ok(tryLock(f), "free: taken");
  t.ok(fs.lstatSync(f).isSymbolicLink(), "a symbolic link, made in one step");
  t.equal(fs.readlinkSync(f), `${process.pid} ${startOf(process.pid)}`, "its target names pid and start time");
  t.notOk(tryLock(f), "held by a live owner (us): not taken again");
  unlock(f);
  t.notOk(fs.existsSync(f), "released");
  unlock(f);
  t.pass("unlocking twice is harmless");
});

t.test("a dead or replaced owner's lock is broken; a live one's is not", async (t) => {
  const d = dir(t);
  const dead0 = spawnSync("/bin/true").pid!;
  fs.symlinkSync(`${dead0} 1`, path.join(d, "dead-link"));
  t.ok(tryLock(path.join(d, "dead-link")), "a link lock whose owner exited: broken and taken");
  fs.symlinkSync(`${process.ppid} ${startOf(process.ppid)}`, path.join(d, "live-link"));
  t.notOk(tryLock(path.join(d, "live-link")), "a link lock of a live owner: held");
  // The regular files below are locks as older versions made them: still understood.
  const dead = spawnSync("/bin/true").pid!;
  fs.writeFileSync(path.join(d, "dead"), `${dead} 1\n`);
  t.ok(tryLock(path.join(d, "dead")), "owner exited: broken and taken");
  fs.writeFileSync(path.join(d, "reused"), `${process.ppid} 1\n`);
  t.ok(tryLock(path.join(d, "reused")), "pid alive but started at another time (reused): broken");
  fs.writeFileSync(path.join(d, "live"), `${process.ppid} ${startOf(process.ppid)}\n`);
  t.notOk(tryLock(path.join(d, "live")), "pid alive, same start time: held");
  fs.writeFileSync(path.join(d, "old-format"), `${process.ppid}\n`);
  t.notOk(tryLock(path.join(d, "old-format")), "no start time recorded, pid alive: held");
  fs.writeFileSync(path.join(d, "empty"), "");
  // staleMs far above any scheduling delay of a loaded machine, so only the planted age decides.
  t.notOk(tryLock(path.join(d, "empty"), 60_000), "empty (being written): held");
  const past = new Date(Date.now() - 120_000);
  fs.utimesSync(path.join(d, "empty"), past, past);
  t.ok(tryLock(path.join(d, "empty"), 60_000), "empty and older than staleMs: broken");
  unlock(path.join(d, "live"));
  t.ok(fs.existsSync(path.join(d, "live")), "unlock never removes another owner's lock");
  fs.symlinkSync(path.join(d, "elsewhere"), path.join(d, "link"));
  t.notOk(tryLock(path.join(d, "link")), "a planted symlink is neither followed nor taken");
  t.notOk(fs.existsSync(path.join(d, "elsewhere")), "nothing created through it");
});

t.test("withLock runs under the lock and waits a bounded time", async (t) => {
  const d = dir(t);
  const f = path.join(d, "w.lock");
  t.equal(
    withLock(f, () => fs.readlinkSync(f).split(" ")[0]),
    String(process.pid),
    "fn runs while we hold it",
  );
  t.notOk(fs.existsSync(f), "released afterwards");
  t.throws(() => withLock(f, () => {
    throw new Error("boom");
  }), /boom/);
  t.notOk(fs.existsSync(f), "released after a throw too");

  fs.writeFileSync(f, `${process.ppid} ${startOf(process.ppid)}\n`);
  let start = Date.now();
  t.equal(withLock(f, () => "ran", 200), "ran", "a stuck holder's lock is broken");
  const stuck = Date.now() - start;
  t.ok(stuck >= 150 && stuck < 5000, `after about waitMs (${stuck} ms)`);

  // A lock from the future (clock set back) never ages: fn still runs, without taking it.
  fs.writeFileSync(f, `${process.ppid} ${startOf(process.ppid)}\n`);
  const future = new Date(Date.now() + 3600_000);
  fs.utimesSync(f, future, future);
  start = Date.now();
  t.equal(withLock(f, () => "ran anyway", 100), "ran anyway");
  t.ok(Date.now() - start < 5000, "within a few rounds of waitMs");
  t.match(fs.readFileSync(f, "ascii"), new RegExp(`^${process.ppid} `), "the other holder's file is left alone");
});

t.test("lockByLink: locks are links to one owner file; their age is the link's, not the owner file's", async (t) => {
  const d = dir(t);
  const owner = path.join(d, "area-owner");
  lockByLink(owner);
  t.equal(fs.readFileSync(owner, "latin1"), `${process.pid} ${startOf(process.pid)}`, "the owner file names pid and start time");
  const f = path.join(d, "b.lock");
  t.ok(tryLock(f), "free: taken");
  const st = fs.lstatSync(f);
  t.ok(st.isFile() && st.nlink === 2 && st.ino === fs.statSync(owner).ino, "the lock is a second name of the owner file (no new inode)");
  t.notOk(tryLock(f), "held by a live owner (us): not taken again");
  // The owner file was written long ago (a long session): a lock linked to it now is young.
  const past = new Date(Date.now() - 120_000);
  fs.utimesSync(owner, past, past);
  const g = path.join(d, "c.lock");
  t.ok(tryLock(g), "taken");
  t.notOk(tryLock(g, 60_000), "its owner file's old mtime does not make it stale");
  unlock(f);
  unlock(g);
  t.notOk(fs.existsSync(f) || fs.existsSync(g), "released: the names go, the owner file stays");
  t.ok(fs.existsSync(owner), "owner file still there");
  // The area is removed (the vault's close): the next lock is a symlink again.
  fs.unlinkSync(owner);
  t.ok(tryLock(f), "taken without the owner file");
  t.ok(fs.lstatSync(f).isSymbolicLink(), "as a symbolic link");
  unlock(f);
});
