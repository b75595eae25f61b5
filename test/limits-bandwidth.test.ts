// limits.bytesPerSecond through the real clients (OpenSSH sftp and scp, rsync) and the real binary:
// at 1 MB/s a 20 MB upload must take at least 15 s on every protocol, and a 5 MB download at
// least 3.5 s. Only the lower bound is asserted: a limit must hold; speed belongs to the bench.
// Real time is measured here because real time is what the limit is about.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, run, auditLines, FAKE_SSH, type Sandbox, type RunResult, type Teardownable } from "./helpers/env.js";
import { scpClient } from "./helpers/scp-wire.js";
import { rsyncClient, localTree } from "./helpers/rsync-client.js";

t.setTimeout(10 * 60 * 1000);

const RATE = 1_000_000;
const UP = 20_000_000;
const DOWN = 5_000_000;
const sha = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");

async function timed(fn: () => Promise<RunResult>): Promise<{ r: RunResult; seconds: number }> {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  return { r, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

function setup(t: Teardownable): { sb: Sandbox; local: string; up: Buffer; down: Buffer } {
  const down = crypto.randomBytes(DOWN);
  const sb = sandbox(t, { config: { profile: "plain", limits: { bytesPerSecond: RATE } }, files: { "down.bin": down } });
  const up = crypto.randomBytes(UP);
  const local = localTree(t, { "up.bin": up });
  return { sb, local, up, down };
}

const PROTOCOLS: Record<string, { put: (sb: Sandbox, local: string) => Promise<RunResult>; get: (sb: Sandbox, local: string) => Promise<RunResult> }> = {
  sftp: {
    put: (sb, local) => sftpBatch(sb, local, "put up.bin up.bin\n"),
    get: (sb, local) => sftpBatch(sb, local, "get down.bin got.bin\n"),
  },
  scp: {
    put: (sb, local) => scpClient(sb, ["up.bin", "host:up.bin"], local),
    get: (sb, local) => scpClient(sb, ["host:down.bin", "got.bin"], local),
  },
  rsync: {
    put: (sb, local) => rsyncClient(sb, [path.join(local, "up.bin"), "h:up.bin"]),
    get: (sb, local) => rsyncClient(sb, ["h:down.bin", path.join(local, "got.bin")]),
  },
};

function sftpBatch(sb: Sandbox, local: string, batch: string): Promise<RunResult> {
  const file = path.join(local, "batch");
  fs.writeFileSync(file, batch);
  return run(["sftp", "-q", "-S", FAKE_SSH, "-b", file, "x:"], { cwd: local, env: sb.sshEnv }, { timeoutMs: 180_000 });
}

for (const [name, p] of Object.entries(PROTOCOLS)) {
  t.test(`${name}: a 1 MB/s limit holds a 20 MB upload and a 5 MB download back`, async (t) => {
    const { sb, local, up, down } = setup(t);

    const put = await timed(() => p.put(sb, local));
    t.equal(put.r.code, 0, put.r.stderr);
    t.equal(sha(fs.readFileSync(path.join(sb.root, "up.bin"))), sha(up), "stored byte-identical");
    t.ok(put.seconds >= (0.75 * UP) / RATE, `the upload took ${put.seconds.toFixed(1)} s (at least 15 s)`);
    t.comment(`${name} upload: ${(UP / 1e6 / put.seconds).toFixed(2)} MB/s`);

    const get = await timed(() => p.get(sb, local));
    t.equal(get.r.code, 0, get.r.stderr);
    t.equal(sha(fs.readFileSync(path.join(local, "got.bin"))), sha(down), "fetched byte-identical");
    t.ok(get.seconds >= (0.7 * DOWN) / RATE, `the download took ${get.seconds.toFixed(1)} s (at least 3.5 s)`);
    t.comment(`${name} download: ${(DOWN / 1e6 / get.seconds).toFixed(2)} MB/s`);

    t.ok(auditLines(sb).some((l) => l.event === "publish" && l.path === "up.bin"), "published and audited");
  });
}
