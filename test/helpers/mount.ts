// A sandbox whose root and state lie on a filesystem mounted for the test (root only): a fresh
// small ext4 where a freed inode number is reused at once, or a tmpfs where a million names are
// made in seconds. Unmounted in teardown; without root or mount(8), the test is skipped with why.
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import type { Test } from "tap";
import { sandbox, gateIds, isRoot, type Sandbox } from "./env.js";

function sh(argv: string[]): { ok: boolean; out: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Mount a fresh `kind` at a new directory: its path, or why not. */
function mount(t: Test, kind: "ext4" | "tmpfs"): string | { skip: string } {
  if (!isRoot) return { skip: `needs root to mount a ${kind}` };
  const dir = fs.mkdtempSync(`/tmp/vb-${kind}-`);
  fs.chmodSync(dir, 0o755);
  const mnt = path.join(dir, "mnt");
  fs.mkdirSync(mnt);
  t.teardown(() => {
    if (!sh(["umount", mnt]).ok) sh(["umount", "-l", mnt]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let m;
  if (kind === "tmpfs") m = sh(["mount", "-t", "tmpfs", "-o", "size=512m,nr_inodes=4m,mode=0755", "tmpfs", mnt]);
  else {
    // 64 MiB, 256-byte inodes (birth times: the default, said here because small images once got 128).
    const img = path.join(dir, "img");
    fs.writeFileSync(img, "");
    fs.truncateSync(img, 64 * 1024 * 1024);
    const mk = sh(["mkfs.ext4", "-q", "-F", "-I", "256", img]);
    if (!mk.ok) return { skip: `mkfs.ext4 failed: ${mk.out}` };
    m = sh(["mount", "-o", "loop", img, mnt]);
  }
  if (!m.ok) return { skip: `cannot mount a ${kind} here: ${m.out}` };
  fs.chmodSync(mnt, 0o755);
  return mnt;
}

/** A sandbox (sandbox()) with its root and state on a fresh `kind`; undefined: the test is skipped. */
export function sandboxOn(t: Test, kind: "ext4" | "tmpfs"): Sandbox | undefined {
  const mnt = mount(t, kind);
  if (typeof mnt !== "string") {
    t.plan(0, mnt.skip); // the whole test skipped, with its reason
    return undefined;
  }
  const sb = sandbox(t);
  const { uid, gid } = gateIds();
  const root = path.join(mnt, "root");
  fs.mkdirSync(root, { mode: 0o750 });
  fs.mkdirSync(`${root}.state`, { mode: 0o700 });
  for (const d of [root, `${root}.state`]) fs.chownSync(d, uid, gid);
  // A small filesystem: no free-space reserve (limits.minFreeBytes, 1 GiB unless told) to keep.
  sb.configure({ root, limits: { minFreeBytes: 0 } });
  return Object.assign(sb, { root, state: `${root}.state` });
}

/** Fill the (mounted) filesystem holding `dir` with one file, then free `leave` bytes of it: a real ENOSPC ahead. The file's path. */
export function fillUp(dir: string, leave: number): string {
  const filler = path.join(dir, "filler");
  const fd = fs.openSync(filler, "w");
  for (const size of [1 << 20, 4096, 512]) {
    const buf = Buffer.alloc(size, 0x61);
    try {
      for (;;) if (fs.writeSync(fd, buf) < size) break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
    }
  }
  fs.fsyncSync(fd);
  fs.ftruncateSync(fd, Math.max(0, fs.fstatSync(fd).size - leave));
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  return filler;
}
