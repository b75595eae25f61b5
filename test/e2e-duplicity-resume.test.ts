// Unattended duplicity (issue 6, acceptance 1): a backup killed in the middle resumes by itself.
// duplicity 0.8.22 restarts a partial set one volume back (dup_main.Restart: start_vol = volumes on
// the remote - 1), so it always sends the highest stored volume again, re-encrypted: the gate lets
// that one volume be replaced, keeps the replaced bytes in state/versions and audits an anomaly.
// Root's seal in between leaves the unfinished set alone. Once the set has its manifest, sending
// a volume of it again is refused.
//
// The kill is SIGKILL to duplicity's process group, while a volume upload is in flight: the
// harshest interruption (power loss, OOM killer, a reboot), with no chance for duplicity, gpg or
// ssh to tidy up, and the gate sees its connection drop in the middle of a file. SIGTERM would
// prove less: duplicity dies of it just the same, but its children may finish what they started.
import t, { type Test } from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";
import { run } from "./helpers/env.js";
import { startSshd, account, vb, succeeded, type Account, type Sshd } from "./helpers/sshd.js";
import { haveDuplicity, makeSource, duplicity, duplicityCommand, tree, url, remoteDir, install, sha256, type Source } from "./helpers/duplicity-e2e.js";
import { FULL_ONLY } from "./helpers/scale.js";
import { versionKey } from "../src/vault/versions.js";
import { OWNER_FILE } from "../src/vault/tmpfiles.js";

if (!haveDuplicity) t.plan(0, "needs root, sshd, duplicity and gpg");

const BACKENDS = ["sftp", "pexpect+sftp", "rsync"];
// --volsize 1 (MiB): 5.5 MiB of random bytes make 6 volumes.
const DATA_BYTES = 5.5 * 1024 * 1024;
const VOLUMES = 6;
const VOL = /^duplicity-full\.\d{8}T\d{6}Z\.vol(\d+)\.difftar\.gpg$/;

function volumes(dir: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const f of fs.readdirSync(dir)) {
    const m = VOL.exec(f);
    if (m) out.set(Number(m[1]), f);
  }
  return out;
}

/** Some file with bytes in it under state/tmp or state/staging: an upload in flight. */
function uploadInFlight(state: string): boolean {
  const walk = (p: string, depth: number): boolean => {
    let names: string[];
    try {
      names = fs.readdirSync(p);
    } catch {
      return false;
    }
    for (const n of names) {
      const q = path.join(p, n);
      try {
        const st = fs.lstatSync(q);
        if (st.isFile() && st.size > 0 && n !== OWNER_FILE) return true; // the owner file: the session's locks (vault/tmpfiles.ts)
        if (st.isDirectory() && depth < 4 && walk(q, depth + 1)) return true;
      } catch {
        // gone meanwhile
      }
    }
    return false;
  };
  return walk(path.join(state, "tmp"), 0) || walk(path.join(state, "staging"), 0);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Start a full backup and SIGKILL its process group once vol2 is stored and the next volume's
 * upload is under way. Returns what was seen at the moment of the kill.
 */
async function killDuringUpload(t: Test, src: Source, sshd: Sshd, name: string, target: string, dir: string, state: string): Promise<{ inFlight: boolean; exited: number | null }> {
  const { argv, env } = duplicityCommand(src, sshd, name, ["full", "--volsize", "1", src.data, target]);
  const child = spawn(argv[0]!, argv.slice(1), { env, detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  let ended = false;
  void closed.then(() => (ended = true));
  const deadline = Date.now() + 240_000;
  while (!ended && Date.now() < deadline && Math.max(0, ...volumes(dir).keys()) < 2) await sleep(20);
  let inFlight = false;
  const window = Date.now() + 10_000;
  while (!ended && Date.now() < window && !(inFlight = uploadInFlight(state))) await sleep(5);
  const killed = !ended;
  if (killed) process.kill(-child.pid!, "SIGKILL");
  const code = await closed;
  if (!killed) t.comment(`duplicity ended before the kill (${code}): ${stderr.slice(-2000)}`);
  return { inFlight, exited: killed ? null : code };
}

/** Wait until no process of the account is left (the gate sessions of the killed run). */
async function sessionsGone(user: string): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if (spawnSync("/usr/bin/pgrep", ["-u", user], { stdio: "ignore" }).status === 1) return true;
    await sleep(100);
  }
  return false;
}

interface AuditEntry {
  event: string;
  path?: string;
  anomaly?: boolean;
  version?: number;
  [k: string]: unknown;
}

function audit(a: Account): AuditEntry[] {
  const file = path.join(a.logDir, `${a.user}.log`);
  return fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as AuditEntry);
}

/** Try to upload `bytes` over `remote` with OpenSSH sftp through the account's key. */
function sftpPut(src: Source, a: Account, sshd: Sshd, remote: string, bytes: Buffer) {
  const local = path.join(src.dir, "replacement.bin");
  fs.writeFileSync(local, bytes);
  return run(["/usr/bin/sftp", ...sshd.clientOpts(src.key), "-b", "-", `${a.user}@127.0.0.1`], { env: { PATH: "/usr/bin:/bin" } }, { input: `put ${local} ${remote}\n`, timeoutMs: 60_000 });
}

// Six volumes, a kill and a resume per backend do not fit CI's budget: the full run only.
t.test("duplicity resumes a killed backup through the gate", FULL_ONLY, async (t) => {
  const sshd = await startSshd(t);
  const a = account(t, { prefix: "r" });
  const src = makeSource(a.dir, { "big.bin": crypto.randomBytes(DATA_BYTES), "small.txt": "a small file\n" });
  await install(t, a, src, sshd);
  const state = `${a.root}.state`;
  const config = path.join(a.configDir, `${a.user}.json`);

  for (const scheme of BACKENDS) {
    await t.test(`${scheme}://`, async (t) => {
      const sub = scheme.replace(/\W/g, "-");
      const dir = remoteDir(a, sub);
      const target = url(scheme, a, sshd, sub);

      const killed = await killDuringUpload(t, src, sshd, sub, target, dir, state);
      t.equal(killed.exited, null, "duplicity was killed, it did not end by itself");
      t.comment(killed.inFlight ? "killed while a volume was being uploaded" : "no upload seen in flight within 10 s; killed anyway");
      t.ok(await sessionsGone(a.user), "the gate sessions of the killed run ended");
      const stored = volumes(dir);
      const top = Math.max(...stored.keys());
      t.ok(top >= 2 && top < VOLUMES, `killed with vol1..vol${top} of ${VOLUMES} stored`);
      t.notOk(fs.readdirSync(dir).some((f) => f.includes(".manifest")), "no manifest: the set is unfinished");
      const before = new Map([...stored].map(([n, f]) => [n, sha256(fs.readFileSync(path.join(dir, f)))]));

      succeeded(t, await vb(["seal", "--config", config]), "seal as root in between");
      t.same(volumes(dir), stored, "seal left the volumes in place");

      const resumed = await duplicity(t, src, sshd, sub, ["full", "--volsize", "1", src.data, target]);
      succeeded(t, resumed, "the same command again completes unattended");
      const restart = /Restarting after volume (\d+)/.exec(resumed.stdout.toString());
      t.equal(restart?.[1], String(top - 1), `duplicity restarted after vol${top - 1}, so it sent vol${top} again`);

      const after = volumes(dir);
      t.ok(after.size >= VOLUMES, `the set has all ${after.size} volumes`);
      t.ok(fs.readdirSync(dir).some((f) => /^duplicity-full\.\d{8}T\d{6}Z\.manifest\.gpg$/.test(f)), "the manifest is stored: the set is finished");
      const resent = [...before].filter(([n, h]) => sha256(fs.readFileSync(path.join(dir, after.get(n)!))) !== h).map(([n]) => n);
      t.same(resent, [top], `only vol${top} was replaced`);
      const log = audit(a);
      for (const n of resent) {
        const rel = `${sub}/${stored.get(n)}`;
        const versions = path.join(state, "versions", versionKey(rel));
        const kept = fs.readdirSync(versions).filter((f) => /^\d+$/.test(f));
        t.same(kept, ["1"], `${rel}: one old version kept`);
        t.equal(sha256(fs.readFileSync(path.join(versions, "1"))), before.get(n), `${rel}: the versions area holds the replaced bytes`);
        t.ok(log.some((l) => l.event === "replace" && l.anomaly === true && l.path === rel && l.version === 1), `${rel}: the replacement is audited as an anomaly`);
      }

      // Restored with paramiko sftp: what is under test is the stored set, and it is the fastest reader.
      const restored = path.join(a.dir, `restore-${sub}`);
      succeeded(t, await duplicity(t, src, sshd, sub, ["restore", url("sftp", a, sshd, sub), restored]), "restore");
      t.same(tree(restored), tree(src.data), "restored byte-identical");
      fs.rmSync(restored, { recursive: true, force: true });

      const vol1 = path.join(dir, after.get(1)!);
      const held = sha256(fs.readFileSync(vol1));
      const put = await sftpPut(src, a, sshd, vol1, crypto.randomBytes(4096));
      t.not(put.code, 0, "sftp put over vol1 of the finished set fails");
      t.equal(sha256(fs.readFileSync(vol1)), held, "vol1 is byte-identical");
      t.ok(
        audit(a).some((l) => l.event === "refused" && String(l.path).endsWith(`${sub}/${after.get(1)}`)),
        "the refusal is audited",
      );
    });
  }
});
