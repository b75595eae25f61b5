// A session may remove or rename only the files it published itself (issue 16, item 3). Its own
// files are not known by (device, inode) alone: ext4 hands a freed inode number to the next new
// file, so a session kept open across a prune could otherwise remove another session's real
// upload that got the number. The test makes the number really be reused, on a small ext4 mounted
// for it (the lowest free inode goes first there), through the real gate.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import { auditLines, sandbox, type Sandbox } from "./helpers/env.js";
import { sandboxOn } from "./helpers/mount.js";
import { SftpClient, FX, describe, type Reply } from "./helpers/sftp-client.js";
import { MAX_PINNED, MIN_AGE_MS } from "../src/vault/own.js";

/** How many uploads session B may make to get the freed inode number before the test gives up. */
const REUSE_TRIES = 40;

async function session(t: Test, sb: Sandbox): Promise<SftpClient> {
  const c = SftpClient.gate(sb);
  t.teardown(() => void (c.alive && c.kill()));
  await c.init();
  return c;
}

async function ok(t: Test, p: Promise<Reply>, what: string): Promise<void> {
  const r = await p;
  t.equal(r.status?.code ?? FX.OK, FX.OK, `${what}: ${describe(r)}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An upload, then the tree as this test looks at it itself (SftpClient.settle). */
async function put(c: SftpClient, name: string, bytes: string): Promise<Reply> {
  const r = await c.put(name, bytes);
  await c.settle();
  return r;
}

/**
 * B uploads `name` until the stored file got inode `ino` (removing its own miss each time, which B
 * may). Returns the bytes stored, or fails the test if the number is never reused.
 */
async function reuse(t: Test, sb: Sandbox, b: SftpClient, name: string, ino: number): Promise<string | undefined> {
  for (let i = 0; i < REUSE_TRIES; i++) {
    const bytes = `B's real backup, try ${i}\n`;
    await ok(t, put(b, name, bytes), `B uploads ${name}`);
    if (fs.lstatSync(path.join(sb.root, name)).ino === ino) {
      t.pass(`B's upload got the freed inode ${ino} on try ${i + 1}`);
      return bytes;
    }
    await ok(t, b.remove(name), "B removes its own miss");
  }
  t.fail(`the freed inode ${ino} was not reused within ${REUSE_TRIES} uploads: the test proves nothing`);
  return undefined;
}

/** A's REMOVE, RENAME and SETSTAT of `name`, now B's file on A's old inode number: all refused. */
async function refused(t: Test, sb: Sandbox, a: SftpClient, name: string, bytes: string): Promise<void> {
  const st = fs.lstatSync(path.join(sb.root, name));
  const mv = await a.rename(name, "taken-by-A.bin");
  t.equal(mv.status?.code, FX.PERMISSION_DENIED, `RENAME refused: ${describe(mv)}`);
  const rm = await a.remove(name);
  t.equal(rm.status?.code, FX.PERMISSION_DENIED, `REMOVE refused: ${describe(rm)}`);
  const chmod = await a.setstat(name, { perm: 0o600 });
  t.equal(chmod.status?.code, FX.PERMISSION_DENIED, `SETSTAT refused: ${describe(chmod)}`);
  t.equal(fs.readFileSync(path.join(sb.root, name), "utf8"), bytes, "B's file is byte-identical");
  const now = fs.lstatSync(path.join(sb.root, name));
  t.match({ ino: now.ino, mode: now.mode, ctimeMs: now.ctimeMs }, { ino: st.ino, mode: st.mode, ctimeMs: st.ctimeMs }, "and untouched");
  t.notOk(fs.existsSync(path.join(sb.root, "taken-by-A.bin")));
}

t.test("a reused inode number does not make another session's file one's own", async (t) => {
  const sb = sandboxOn(t, "ext4");
  if (!sb) return;
  const a = await session(t, sb);
  await ok(t, put(a, "early.bin", "A's first file\n"), "A uploads early.bin");
  await ok(t, put(a, "victim.bin", "A's file, pruned later\n"), "A uploads victim.bin");
  const ino = fs.lstatSync(path.join(sb.root, "victim.bin")).ino;
  // Past the descriptors a session keeps, its older files are known by their birth time.
  await sleep(MIN_AGE_MS + 100);
  for (let i = 0; i <= MAX_PINNED; i++) await ok(t, put(a, `later-${i}.bin`, `later ${i}\n`), `A uploads later-${i}.bin`);
  const b = await session(t, sb);
  await ok(t, put(b, "warm-up.bin", "B is set up\n"), "B's first upload");
  fs.unlinkSync(path.join(sb.root, "victim.bin")); // root's prune, while A stays connected
  const bytes = await reuse(t, sb, b, "victim.bin", ino);
  if (bytes === undefined) return;
  await refused(t, sb, a, "victim.bin", bytes);
  // A's own older file is still its own: birth time identifies it.
  await ok(t, a.rename("early.bin", "early-renamed.bin"), "A renames its own older file");
  await ok(t, a.remove("early-renamed.bin"), "and removes it");
  await ok(t, a.remove(`later-${MAX_PINNED}.bin`), "A removes its most recent file");
  await Promise.all([a.end(), b.end()]);
  const lines = auditLines(sb);
  t.ok(lines.some((l) => l.event === "refused" && l.op === "remove" && l.path === "victim.bin"), "the refused REMOVE is audited");
});

t.test("a recent own file stays pinned: pruning it cannot free its inode for another file", async (t) => {
  const sb = sandboxOn(t, "ext4");
  if (!sb) return;
  const a = await session(t, sb);
  await ok(t, put(a, "victim.bin", "A's file, pruned at once\n"), "A uploads victim.bin");
  const ino = fs.lstatSync(path.join(sb.root, "victim.bin")).ino;
  const b = await session(t, sb);
  await ok(t, put(b, "warm-up.bin", "B is set up\n"), "B's first upload");
  fs.unlinkSync(path.join(sb.root, "victim.bin"));
  for (let i = 0; i < REUSE_TRIES; i++) {
    await ok(t, put(b, `f-${i}.bin`, `B ${i}\n`), `B uploads f-${i}.bin`);
    t.not(fs.lstatSync(path.join(sb.root, `f-${i}.bin`)).ino, ino, `f-${i}.bin did not get A's inode`);
  }
  await ok(t, put(b, "victim.bin", "B's real backup\n"), "B uploads victim.bin");
  await refused(t, sb, a, "victim.bin", "B's real backup\n");
  await Promise.all([a.end(), b.end()]);
});

t.test("the descriptors that keep a session's own files are read-only: none can write a published file, sealed or not", async (t) => {
  const sb = sandbox(t);
  const a = await session(t, sb);
  for (let i = 0; i < 3; i++) await ok(t, put(a, `own-${i}.bin`, `A's file ${i}\n`), `A uploads own-${i}.bin`);
  // By inode: a descriptor shows the name it was opened by (the temporary one, since removed).
  const stored = new Map(fs.readdirSync(sb.root).map((n) => [fs.lstatSync(path.join(sb.root, n)).ino, n]));
  // The server is the client's child's child (the user switch, the launcher's exec of node): every
  // process that holds a descriptor of a stored file is looked at.
  const pins: { name: string; access: number }[] = [];
  for (const pid of fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone meanwhile
    }
    for (const fd of fds) {
      let st: fs.Stats;
      let info: string;
      try {
        st = fs.statSync(`/proc/${pid}/fd/${fd}`);
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
      } catch {
        continue; // closed meanwhile
      }
      const name = st.isFile() ? stored.get(st.ino) : undefined;
      if (name === undefined || st.dev !== fs.lstatSync(sb.root).dev) continue;
      const flags = /^flags:\s+([0-7]+)$/m.exec(info);
      pins.push({ name, access: Number.parseInt(flags?.[1] ?? "2", 8) & 3 });
    }
  }
  t.same(pins.map((p) => p.name).sort(), ["own-0.bin", "own-1.bin", "own-2.bin"], "the session keeps its three files open, to know them as its own");
  t.same(pins.filter((p) => p.access !== 0), [], "every one of them read-only (O_RDONLY)");
  await a.end();
});
