// The tail copy of compactArrivals on a really full filesystem (a small loop ext4). The tail is what
// sessions append to the record after compaction read it; here it is appended, and the filesystem
// filled, from compaction's own keep callback, which runs after the read and before the new file is
// written: no race, the same moment as a session's line. There is room for the compacted lines, not
// for the tail. No line may be lost: the compaction fails with a message, the record stays whole,
// and the next compaction, once there is room, keeps the tail too.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandboxOn, fillUp } from "./helpers/mount.js";
import { ARRIVALS_FILE, compactArrivals, readArrivals, recordArrival } from "../src/vault/arrivals.js";

const TAIL = 400;

t.test("the tail copy meets ENOSPC: compaction fails with a message, no line is lost, the next one recovers", async (t) => {
  const sb = sandboxOn(t, "ext4");
  if (!sb) return;
  const { state } = sb;
  fs.mkdirSync(path.join(state, "locks"));
  for (let i = 0; i < 3; i++) recordArrival(state, `host/kept-${i}`, { dev: 1, ino: 100 + i }, 1000 + i, "k");
  const stateFd = fs.openSync(state, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const locksFd = fs.openSync(path.join(state, "locks"), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => {
    fs.closeSync(stateFd);
    fs.closeSync(locksFd);
  });
  const long = "x".repeat(150);
  let filler: string | undefined;
  const keep = () => {
    if (!filler) {
      // ~80 KB of lines a session appends meanwhile, then a disk with 4 KiB left: the 3 kept lines fit.
      for (let i = 0; i < TAIL; i++) recordArrival(state, `host/tail-${i}-${long}`, { dev: 1, ino: 1000 + i }, 5000 + i, "k");
      filler = fillUp(path.dirname(sb.root), 4096);
    }
    return true;
  };
  let err: unknown;
  try {
    compactArrivals(stateFd, locksFd, keep);
  } catch (e) {
    err = e;
  }
  t.ok(filler, "the tail was appended and the disk filled during the compaction");
  t.match(err, { code: "IO", message: new RegExp(`state/${ARRIVALS_FILE.replace(".", "\\.")} .*ENOSPC`) }, "the compaction fails and says why");
  t.equal(readArrivals(stateFd).size, 3 + TAIL, "every line is in the record: the 3 read, and the tail");
  t.same(fs.readdirSync(state).filter((n) => n.startsWith(`${ARRIVALS_FILE}.`)), [], "no temporary file left");

  fs.rmSync(filler!);
  t.same(compactArrivals(stateFd, locksFd, () => true), { kept: 3 + TAIL, dropped: 0 }, "with room, the next compaction succeeds");
  t.equal(readArrivals(stateFd).size, 3 + TAIL, "and keeps them all");
});
