// Helpers for scp tests: the legacy protocol spoken by hand (raw sink/source sessions), its replies
// decoded, and the real OpenSSH client run through fake-ssh.
import type { Test } from "tap";
import { FAKE_SSH, run, runGate, type RunResult, type Sandbox } from "./env.js";
import { parseCommand } from "../../src/gate/command.js";
import { decide } from "../../src/gate/decide.js";
import { parseConfig } from "../../src/config/load.js";

export type Reply = { kind: "ok" } | { kind: "warn" | "fatal"; text: string } | { kind: "data"; bytes: Buffer };

/** Split a sink's stdout into its replies: \0, \x01text\n, \x02text\n. */
export function replies(out: Buffer): Reply[] {
  const r: Reply[] = [];
  for (let i = 0; i < out.length; ) {
    const b = out[i]!;
    if (b === 0) {
      r.push({ kind: "ok" });
      i++;
    } else if (b === 1 || b === 2) {
      const nl = out.indexOf(0x0a, i);
      const end = nl === -1 ? out.length : nl;
      r.push({ kind: b === 1 ? "warn" : "fatal", text: out.subarray(i + 1, end).toString() });
      i = end + 1;
    } else {
      r.push({ kind: "data", bytes: out.subarray(i) });
      break;
    }
  }
  return r;
}

export function kinds(out: Buffer): string {
  return replies(out)
    .map((r) => r.kind)
    .join(" ");
}

/** A C line with its data and the trailing status byte, as a well-behaved client sends it. */
export function cFile(name: string | Buffer, data: string | Buffer, mode = "0644"): Buffer {
  const body = Buffer.from(data);
  return Buffer.concat([Buffer.from(`C${mode} ${body.length} `), Buffer.from(name), Buffer.from("\n"), body, Buffer.of(0)]);
}

/** Generous: a loaded machine can take a minute to start node; a hung gate still gets killed. */
export const PATIENCE = { timeoutMs: 600_000 };

export function gate(sb: Sandbox, command: string, input: Buffer | string = ""): Promise<RunResult> {
  return runGate(sb, command, { input, ...PATIENCE });
}

/** Real OpenSSH scp in legacy mode (-O), its ssh replaced by fake-ssh; remote paths as host:… */
export function scpClient(sb: Sandbox, args: string[], cwd = sb.dir): Promise<RunResult> {
  return run(["/usr/bin/scp", "-O", "-q", "-S", FAKE_SSH, ...args], { cwd, env: sb.sshEnv }, PATIENCE);
}

/** In-process, no node start: each command is refused by parse + decide with the reason given. */
export function gateReasons(t: Test, title: string, cases: Array<[string, RegExp]>, config: Record<string, unknown> = {}): void {
  t.test(`${title}: the reason given`, async (t) => {
    const policy = parseConfig(JSON.stringify({ root: "/srv/vb/root", audit: { file: "/srv/vb/audit.log" }, ...config }), "/srv/vb/t.json");
    for (const [command, why] of cases) t.throws(() => decide(parseCommand(command), policy), { message: why }, command);
  });
}
