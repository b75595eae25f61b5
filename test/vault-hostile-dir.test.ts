// A directory full of duplicity-like names must not let one upload hold the directory's lock for
// as long as indexing it takes (issue 16, item 9): other sessions take a lock held longer than 3 s
// for a stuck one and break it, and two sessions could then both pass a rule only one may pass.
// Two sessions race for the one incremental that may start at T0, in a directory of VB_HOSTILE_NAMES
// names (a million in the full run): exactly one must be stored, the other refused.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { auditLines } from "./helpers/env.js";
import { sandboxOn } from "./helpers/mount.js";
import { SftpClient, FX, PF, describe } from "./helpers/sftp-client.js";
import { fullSet, plant } from "./helpers/duplicity.js";
import { size } from "./helpers/scale.js";

t.setTimeout(30 * 60 * 1000);

// Quick: enough names that indexing them takes longer than the lock's 3 s on a CI machine.
const NAMES = size("VB_HOSTILE_NAMES", 1_000_000, 300_000);
const T0 = "20250101T000000Z";
const TH = "20240101T000000Z";
const HOUR = 3_600_000;

const seconds = (since: number) => ((Date.now() - since) / 1000).toFixed(1);

t.test(`${NAMES} duplicity-like names: two racing uploads, one lock, one verdict each`, async (t) => {
  // tmpfs: a million names made in seconds (on a disk, minutes); indexing them costs the same.
  const sb = sandboxOn(t, "tmpfs");
  if (!sb) return;
  plant(sb, "host", fullSet(T0), Date.now() - 2 * HOUR);
  const host = path.join(sb.root, "host");
  const made = Date.now();
  // The attacker's names: volumes of one unfinished set, empty (root makes them, by touch(1) with
  // many names a call; the gate only lists them).
  const vols = Array.from({ length: NAMES }, (_, i) => `duplicity-full.${TH}.vol${i + 1}.difftar.gpg`);
  const touch = spawnSync("xargs", ["touch", "--"], { cwd: host, input: vols.join("\n"), maxBuffer: 1 << 20 });
  t.equal(touch.status, 0, `touch: ${String(touch.stderr)}`);
  t.comment(`${NAMES} names made in ${seconds(made)} s`);

  const sessions = [SftpClient.gate(sb), SftpClient.gate(sb)];
  for (const c of sessions) t.teardown(() => void (c.alive && c.kill()));
  await Promise.all(sessions.map((c) => c.init()));
  // Both may start: no incremental starts at T0 yet. Only one may be stored.
  const names = ["20250102T000000Z", "20250103T000000Z"].map((t1) => `host/duplicity-inc.${T0}.to.${t1}.vol1.difftar.gpg`);
  let started = Date.now();
  const handles = await Promise.all(sessions.map((c, i) => c.openHandle(names[i]!, PF.WRITE | PF.CREAT | PF.TRUNC)));
  t.comment(`both OPENs (each indexes the directory once): ${seconds(started)} s`);
  await Promise.all(sessions.map((c, i) => c.write(handles[i]!, 0, `session ${i}`)));
  started = Date.now();
  const closed = await Promise.all(sessions.map((c, i) => c.close(handles[i]!)));
  t.comment(`both CLOSEs: ${seconds(started)} s`);
  const won = closed.map((r) => r.status?.code === FX.OK);
  t.equal(won.filter(Boolean).length, 1, `exactly one stored: ${closed.map(describe).join(" / ")}`);
  const lost = closed[won.indexOf(false)];
  t.match(lost?.status?.message ?? "", /another incremental set already starts/, "the other refused by the rule, not by a race");
  t.same(
    names.map((n) => fs.existsSync(path.join(sb.root, n))),
    won,
    "on disk: the winner's file only",
  );

  // The winner's next volume: its index is still current (it changed the directory itself).
  const winner = sessions[won.indexOf(true)]!;
  started = Date.now();
  const next = names[won.indexOf(true)]!.replace(".vol1.", ".vol2.");
  t.equal((await winner.put(next, "vol2")).status?.code, FX.OK, "the next volume");
  t.comment(`the winner's next upload: ${seconds(started)} s`);
  await Promise.all(sessions.map((c) => c.end(120_000)));
  t.equal(auditLines(sb).filter((l) => l.event === "publish").length, 2);
});
