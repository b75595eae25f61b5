// Idle means idle both ways (issue 18, item 5): a client that stops reading a download (scp -f,
// SFTP READs, ls) is cut off after limits.idleSeconds like one that stops writing, and its session
// slot is free again; before, it held the slot until the session's lifetime (12 hours).
// The gate's stdout is a pipe this test never reads; idleSeconds is 5, the schema's minimum.
import t, { type Test } from "tap";
import fs from "node:fs";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import { sandbox, gateIds, BIN, auditLines, runGate, type Sandbox } from "./helpers/env.js";
import { packet, u32, u64, str, attrs, T, PF } from "./helpers/sftp-client.js";

t.setTimeout(5 * 60_000);

const IDLE_S = 5;
const BIG = crypto.randomBytes(16 * 1024 * 1024); // far more than the pipe's and the socket's buffers

interface Stalled {
  code: number | null;
  seconds: number;
  stderr: string;
}

/** The gate with `command`, sent `input` and then nothing; its stdout is never read. */
function stallReading(sb: Sandbox, command: string, input: Buffer): Promise<Stalled> {
  const { name } = gateIds();
  const env = { PATH: "/usr/bin:/bin", SSH_CLIENT: "127.0.0.1 50000 22", SSH_ORIGINAL_COMMAND: command };
  const argv = name ? ["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "--config", sb.config] : [BIN, "--config", sb.config];
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin.on("error", () => {});
  child.stdin.write(input); // stdin stays open: a client that is still there, only not reading
  // Killed after two minutes at the latest: the old behaviour would hold on for 12 hours.
  const kill = setTimeout(() => child.kill("SIGKILL"), 120_000);
  return new Promise((resolve) => {
    child.on("exit", (code) => {
      clearTimeout(kill);
      child.stdin.destroy();
      child.stdout.destroy();
      resolve({ code, seconds: (Date.now() - started) / 1000, stderr });
    });
  });
}

function setUp(t: Test): Sandbox {
  const sb = sandbox(t, { files: { "big.gpg": BIG, "d/a.gpg": "a\n" } });
  // One session slot: a stalled session that kept it would refuse the next one.
  sb.configure({ limits: { idleSeconds: IDLE_S, sessions: 1 } });
  return sb;
}

async function slotIsFree(t: Test, sb: Sandbox): Promise<void> {
  const r = await runGate(sb, "ls -1 d", { timeoutMs: 60_000 });
  t.equal(r.code, 0, `the next session gets the slot: ${r.stderr}`);
  t.equal(r.stdout.toString(), "a.gpg\n");
}

function ended(t: Test, r: Stalled): void {
  t.comment(`ended after ${r.seconds.toFixed(1)} s (idleSeconds ${IDLE_S}; timings noisy)`);
  t.not(r.code, 0, "a failed session");
  t.not(r.code, null, "ended by itself, not killed by the test");
  t.ok(r.seconds < 60, `ended within a minute (${r.seconds.toFixed(1)} s)`);
  t.ok(r.seconds >= IDLE_S - 0.5, "not before idleSeconds");
}

t.test("scp -f: a client that stops reading the data is cut off after idleSeconds", async (t) => {
  const sb = setUp(t);
  // Ready, then accept the C line: the data follows and is never read.
  const r = await stallReading(sb, "scp -f big.gpg", Buffer.of(0, 0));
  ended(t, r);
  t.match(r.stderr, /nothing read by the client for 5 s/, "the client is told why");
  t.ok(auditLines(sb).some((l) => l.event === "error" && /nothing read by the client/.test(String(l.reason))), "audited");
  t.match(auditLines(sb).find((l) => l.event === "session-end"), { exit: r.code });
  await slotIsFree(t, sb);
});

t.test("sftp: a client that sends READs and stops reading the replies is cut off after idleSeconds", async (t) => {
  const sb = setUp(t);
  const handleId = 2;
  // INIT, OPEN big.gpg (the first handle the server gives is the counter 1), then 256 READs of
  // 32 KiB sent at once: 8 MiB of replies that are never read.
  const reads = Array.from({ length: 256 }, (_, i) => packet(T.READ, u32(100 + i), str(u32(1)), u64(i * 32768), u32(32768)));
  const input = Buffer.concat([packet(T.INIT, u32(3)), packet(T.OPEN, u32(handleId), str("big.gpg"), u32(PF.READ), attrs()), ...reads]);
  const r = await stallReading(sb, "/usr/lib/openssh/sftp-server", input);
  ended(t, r);
  t.ok(auditLines(sb).some((l) => l.event === "idle-timeout"), "audited as idle");
  await slotIsFree(t, sb);
});

t.test("ls: a client that does not read a long listing is cut off after idleSeconds", async (t) => {
  const sb = setUp(t);
  // 6,000 names of 200 bytes: over a MiB of listing.
  for (let i = 0; i < 6000; i++) fs.writeFileSync(`${sb.root}/d/${String(i).padStart(6, "0")}${"n".repeat(194)}`, "");
  const r = await stallReading(sb, "ls -1 d", Buffer.alloc(0));
  ended(t, r);
  t.match(r.stderr, /nothing read by the client for 5 s/);
});
