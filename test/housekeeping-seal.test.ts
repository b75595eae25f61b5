import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawn, execFileSync } from "node:child_process";
import { sandbox, snapshot, auditLines, gateIds, type Sandbox } from "./helpers/env.js";
import { fullSet, plant, runRoot, exists } from "./helpers/duplicity.js";
import { open } from "../src/housekeeping/context.js";
import { seal } from "../src/housekeeping/seal.js";

const T0 = "20250101T000000Z";
const T1 = "20250108T000000Z";
const settled = { housekeeping: { minAgeMinutes: 0 } };

/** A snapshot without link counts: the test itself adds hard links to canaries mid-walk. */
function noLinks(snap: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(snap).map(([k, v]) => [k, v.split(" ").filter((_, i) => i !== 2).join(" ")]));
}

function mode(p: string) {
  const st = fs.lstatSync(p);
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
}

/** Canaries outside the root owned by the gate user, so a wrongful chown or chmod would show. */
function canaries(sb: Sandbox): string {
  const { uid, gid } = gateIds();
  for (const p of [sb.outside, path.join(sb.outside, "sub"), path.join(sb.outside, "canary.txt"), path.join(sb.outside, "sub", "secret")]) {
    fs.chownSync(p, uid, gid);
    fs.chmodSync(p, fs.lstatSync(p).isDirectory() ? 0o755 : 0o644);
  }
  return path.join(sb.outside, "canary.txt");
}

t.test("seal: settled files become root:GROUP 0440, directories root:GROUP 1770; unfinished sets wait", async (t) => {
  const sb = sandbox(t, { config: settled });
  const { uid, gid } = gateIds();
  plant(sb, "host", fullSet(T0));
  plant(sb, "host", fullSet(T1, { manifest: false }));
  plant(sb, ".", ["notes.txt"]);
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  for (const n of [...fullSet(T0).map((n) => `host/${n}`), "notes.txt"]) t.same(mode(path.join(sb.root, n)), { uid: 0, gid, mode: 0o440 }, n);
  for (const n of fullSet(T1, { manifest: false })) t.same(mode(path.join(sb.root, "host", n)), { uid, gid, mode: 0o640 }, `${n}: unfinished, left`);
  for (const d of [".", "host"]) t.same(mode(path.join(sb.root, d)), { uid: 0, gid, mode: 0o1770 }, d);
  t.match(r.stdout, /sealed 2 directories and 5 files/);
  t.match(r.stdout, /3 files of unfinished backup sets/);
  t.match(auditLines(sb).at(-1), { event: "seal", files: 5, dirs: 2, unfinished: 3, client: "root" });

  const again = await runRoot(sb, ["seal"]);
  t.equal(again.code, 0);
  t.match(again.stdout, /sealed 0 directories and 0 files \(7 already sealed\)/, "idempotent");
});

t.test("seal leaves files younger than housekeeping.minAgeMinutes (default 15) for a later run", async (t) => {
  const sb = sandbox(t);
  const { uid } = gateIds();
  plant(sb, ".", fullSet(T0));
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /4 files younger than the minimum age/);
  for (const n of fullSet(T0)) t.equal(mode(path.join(sb.root, n)).uid, uid, n);
});

t.test("seal --dry-run changes nothing; unknown options and a missing config are refused", async (t) => {
  const sb = sandbox(t, { config: settled });
  plant(sb, ".", ["a.txt"]);
  const before = snapshot(sb.root);
  const r = await runRoot(sb, ["seal", "--dry-run"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /would seal 1 directories and 1 files/);
  t.same(snapshot(sb.root), before);
  const bad = await runRoot(sb, ["seal", "--force"]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown option '--force'/);
  t.same(snapshot(sb.root), before);
});

t.test("seal touches nothing through symbolic links, hard links or a FIFO planted in the root", async (t) => {
  const sb = sandbox(t, { config: settled });
  const canary = canaries(sb);
  fs.symlinkSync(canary, path.join(sb.root, "link-to-canary"));
  fs.symlinkSync(sb.outside, path.join(sb.root, "link-to-outside"));
  fs.linkSync(canary, path.join(sb.root, "hardlink-to-canary"));
  execFileSync("mkfifo", [path.join(sb.root, "fifo")]);
  plant(sb, "d", ["ok.txt"]);
  const before = snapshot(sb.outside);
  const r = await runRoot(sb, ["seal"], 60_000);
  t.equal(r.code, 0, r.stderr);
  t.same(snapshot(sb.outside), before, "no canary changed owner, mode or content");
  t.match(r.stdout, /link-to-canary: symbolic link/);
  t.match(r.stdout, /link-to-outside: symbolic link/);
  t.match(r.stdout, /hardlink-to-canary: file with more than one link/);
  t.match(r.stdout, /fifo: FIFO/);
  const skips = auditLines(sb).filter((l) => l.event === "seal-skip");
  t.equal(skips.length, 4);
  t.ok(skips.every((l) => l.anomaly === true));
  t.equal(mode(path.join(sb.root, "d", "ok.txt")).uid, 0, "the plain file was sealed");
});

t.test("seal: a directory or file swapped for a link between look and open is left alone", async (t) => {
  const sb = sandbox(t, { config: settled });
  const canary = canaries(sb);
  plant(sb, "d", ["inner.txt"]);
  plant(sb, ".", ["f-symlink", "f-hardlink", "f-fifo", "plain"]);
  const before = snapshot(sb.outside);
  const swaps: Record<string, () => void> = {
    d: () => {
      fs.renameSync(path.join(sb.root, "d"), path.join(sb.root, "d.moved"));
      fs.symlinkSync(sb.outside, path.join(sb.root, "d"));
    },
    "f-symlink": () => {
      fs.unlinkSync(path.join(sb.root, "f-symlink"));
      fs.symlinkSync(canary, path.join(sb.root, "f-symlink"));
    },
    "f-hardlink": () => {
      fs.unlinkSync(path.join(sb.root, "f-hardlink"));
      fs.linkSync(canary, path.join(sb.root, "f-hardlink"));
    },
    "f-fifo": () => {
      fs.unlinkSync(path.join(sb.root, "f-fifo"));
      execFileSync("mkfifo", [path.join(sb.root, "f-fifo")]);
    },
  };
  const done = new Set<string>();
  const h = open(sb.config, "seal", (comps, name) => {
    if (comps.length === 0 && swaps[name] && !done.has(name)) {
      done.add(name);
      swaps[name]!();
    }
  });
  let report;
  try {
    report = seal(h);
  } finally {
    h.close();
  }
  t.same([...done].sort(), Object.keys(swaps).sort(), "every swap happened mid-walk");
  t.same(noLinks(snapshot(sb.outside)), noLinks(before), "no canary changed owner, mode or content");
  const why = Object.fromEntries(report.odd.map((o) => [o.path, o.why]));
  t.match(why, { d: /ELOOP|ENOTDIR/, "f-symlink": /ELOOP/, "f-hardlink": /more than one link/, "f-fifo": /FIFO|changed/ });
  t.equal(mode(path.join(sb.root, "plain")).uid, 0, "the untouched file was sealed");
});

t.test("seal: a directory flipping between a directory and a link while seal runs", async (t) => {
  const sb = sandbox(t, { config: settled });
  canaries(sb);
  plant(sb, "flip", ["x"]);
  plant(sb, ".", ["y"]);
  const before = snapshot(sb.outside);
  // A busy loop in the background: the name 'flip' alternates between the real directory and a
  // link to the outside directory, as fast as the shell can.
  const loop = spawn(
    "/bin/sh",
    ["-c", 'cd "$1" && while :; do mv flip flip.d; ln -s "$2" flip; rm flip; mv flip.d flip; done', "sh", sb.root, sb.outside],
    { stdio: "ignore" },
  );
  try {
    // In-process, so that many walks fit in a short race window.
    for (let i = 0; i < 40; i++) {
      const h = open(sb.config, "seal");
      try {
        seal(h);
      } finally {
        h.close();
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    loop.kill("SIGKILL");
    await new Promise((r) => loop.once("close", r));
  }
  t.same(snapshot(sb.outside), before, "no canary changed owner, mode or content");
});

t.test("seal sweeps abandoned session areas in state, following no link out of them", async (t) => {
  const sb = sandbox(t);
  canaries(sb);
  const dead = path.join(sb.state, "tmp", "999999999-dead");
  fs.mkdirSync(path.join(dead, "nested"), { recursive: true });
  fs.writeFileSync(path.join(dead, "1"), "partial upload");
  fs.symlinkSync(sb.outside, path.join(dead, "escape"));
  fs.symlinkSync(path.join(sb.outside, "sub"), path.join(dead, "nested", "escape"));
  const staging = path.join(sb.state, "staging", "999999998-dead");
  fs.mkdirSync(path.join(staging, "t"), { recursive: true, mode: 0o555 });
  const alive = path.join(sb.state, "staging", `${process.pid}-alive`);
  fs.mkdirSync(alive, { recursive: true });
  const before = snapshot(sb.outside);
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  t.notOk(exists(dead), "dead tmp area swept");
  t.notOk(exists(staging), "dead staging area swept");
  t.ok(exists(alive), "a live session's area stays");
  t.same(snapshot(sb.outside), before);
  t.match(r.stdout, /swept 2 abandoned/);
  t.equal(auditLines(sb).filter((l) => l.event === "swept").length, 2);
});

t.test("seal refuses to run as anyone but root", async (t) => {
  const sb = sandbox(t);
  const { name } = gateIds();
  t.ok(name, "we run as root");
  const { run, BIN } = await import("./helpers/env.js");
  const r = await run(["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "seal", "--config", sb.config], { env: { PATH: "/usr/bin:/bin" } });
  t.equal(r.code, 4);
  t.match(r.stderr, /must run as root/);
});

t.test("16.4: a directory named like an interrupted set's manifest does not finish it: seal leaves the set for its resume", async (t) => {
  const sb = sandbox(t, { config: settled });
  const { uid, gid } = gateIds();
  const set = fullSet(T1, { manifest: false });
  plant(sb, "host", set);
  const odd = path.join(sb.root, "host", `duplicity-full.${T1}.manifest.gpg`);
  fs.mkdirSync(odd);
  const r = await runRoot(sb, ["seal"]);
  t.equal(r.code, 0, r.stderr);
  for (const n of set) t.same(mode(path.join(sb.root, "host", n)), { uid, gid, mode: 0o640 }, `${n}: unfinished, left for the resume`);
  t.match(r.stdout, /3 files of unfinished backup sets/);
  t.ok(fs.statSync(odd).isDirectory(), "the directory is walked like any other");
});

t.test("16.4: one entry seal cannot change (immutable: EPERM) does not stop it; exit 4 names it", async (t) => {
  const sb = sandbox(t, { config: settled });
  const { gid } = gateIds();
  plant(sb, "host", fullSet(T0));
  const stuck = path.join(sb.root, "host", fullSet(T0)[0]!);
  execFileSync("chattr", ["+i", stuck]);
  try {
    const r = await runRoot(sb, ["seal"]);
    t.equal(r.code, 4, "the run fails");
    t.match(r.stdout, /host\/duplicity-full\.20250101T000000Z\.vol1\.difftar\.gpg: not sealed: EPERM/);
    for (const n of fullSet(T0).slice(1)) t.same(mode(path.join(sb.root, "host", n)), { uid: 0, gid, mode: 0o440 }, `${n}: sealed all the same`);
  } finally {
    execFileSync("chattr", ["-i", stuck]);
  }
});
