// The session's side of the arrivals record: one descriptor kept open, reopened when root's
// compaction has replaced the file. A reopen that fails must not leave the closed descriptor's
// number behind: the next file the session opens gets that number, and the next line would land in
// it (a published file's bytes after its hash was taken, or the audit log).
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ARRIVALS_FILE, readArrivals, recordArrival } from "../src/vault/arrivals.js";

t.test("a failed reopen leaves no stale descriptor: the next line goes to the record, never into a file opened since", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vb-arrivals-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const state = path.join(dir, "state");
  fs.mkdirSync(state);
  const record = path.join(state, ARRIVALS_FILE);
  recordArrival(state, "host/a", { dev: 1, ino: 101 }, 1000, "k");

  // The record is gone and its name cannot be opened again (a directory stands there): the line
  // cannot be recorded, and the caller hears it.
  fs.rmSync(record);
  fs.mkdirSync(record);
  t.throws(() => recordArrival(state, "host/b", { dev: 1, ino: 102 }, 2000, "k"), { code: "EISDIR" }, "the failure reaches the caller");

  // A file the session opens now takes the lowest free descriptor number.
  const victim = path.join(dir, "published.bin");
  fs.writeFileSync(victim, "the stored bytes\n");
  const fd = fs.openSync(victim, "r+");
  t.teardown(() => fs.closeSync(fd));

  fs.rmdirSync(record);
  recordArrival(state, "host/c", { dev: 1, ino: 103 }, 3000, "k");
  t.equal(fs.readFileSync(victim, "utf8"), "the stored bytes\n", "the file opened since is untouched");
  const stateFd = fs.openSync(state, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(stateFd));
  t.same([...readArrivals(stateFd).keys()], ["host/c"], "the line is in the new record");
});

t.test("compaction after compaction between a line's write and its check: the line still ends up in the record", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vb-arrivals-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const state = path.join(dir, "state");
  fs.mkdirSync(path.join(state, "locks"), { recursive: true });
  const record = path.join(state, ARRIVALS_FILE);
  recordArrival(state, "host/a", { dev: 1, ino: 101 }, 1000, "k");
  // A compaction that finishes (its last copy of the old file's tail done) right after each write
  // of the session's line, before the session looks at the name: it replaces the record with what
  // it read before the line. It takes the compactions' lock as prune does, so it never runs while
  // the lock is held.
  const realWrite = fs.writeSync;
  let compactions = 0;
  const compactAfterWrite = ((fd: number, ...rest: unknown[]) => {
    const n = (realWrite as (...a: unknown[]) => number)(fd, ...rest);
    const before = fs.readFileSync(record, "utf8").split("\n").filter((l) => l && !l.includes("host/b")).join("\n") + "\n";
    if (compactions < 10 && !fs.lstatSync(path.join(state, "locks", "arrivals.lock"), { throwIfNoEntry: false })) {
      compactions++;
      fs.writeFileSync(`${record}.new`, before);
      fs.renameSync(`${record}.new`, record);
    }
    return n;
  }) as typeof fs.writeSync;
  fs.writeSync = compactAfterWrite;
  try {
    recordArrival(state, "host/b", { dev: 1, ino: 102 }, 2000, "k");
  } finally {
    fs.writeSync = realWrite;
  }
  t.ok(compactions >= 3, `${compactions} compactions came between the line's writes and their checks`);
  const stateFd = fs.openSync(state, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(stateFd));
  t.same([...readArrivals(stateFd).keys()].sort(), ["host/a", "host/b"], "the line is in the record, and what was there before");
});
