// A real OpenSSH sshd on 127.0.0.1 for end-to-end tests: its own host key, its own config
// (StrictModes yes, public keys only, only vbt-* accounts), a random free port, a log file. Plus
// throwaway backup accounts installed with install-remote, removed with their files at teardown.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import type { Test } from "tap";
import { TOP, run, type RunResult, type Teardownable } from "./env.js";
import { programFiles } from "../../src/remote/system.js";

export const SSHD = "/usr/sbin/sshd";
export const haveSshd = fs.existsSync(SSHD) && fs.existsSync("/usr/bin/ssh") && process.getuid?.() === 0;

export interface Sshd {
  dir: string;
  port: number;
  config: string;
  log: string;
  knownHosts: string;
  /** Options every OpenSSH client (ssh, sftp, scp) needs to reach this sshd with `key`. */
  clientOpts(key: string): string[];
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

function must(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

export function sshdConfig(dir: string, port: number): string {
  return [
    `Include ${dir}/sshd_config.d/*.conf`,
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${dir}/host_ed25519`,
    `PidFile ${dir}/sshd.pid`,
    "StrictModes yes",
    // No PAM in a test container; sshd then refuses accounts whose password field starts with '!'.
    "UsePAM no",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin no",
    "AllowUsers vbt-*",
    "AuthorizedKeysFile .ssh/authorized_keys",
    "PermitUserEnvironment no",
    "AcceptEnv LANG LC_*",
    "X11Forwarding no",
    "MaxStartups 100:30:200",
    "LogLevel VERBOSE",
    "Subsystem sftp /usr/lib/openssh/sftp-server",
    "",
  ].join("\n");
}

export async function startSshd(t: Teardownable): Promise<Sshd> {
  const dir = fs.mkdtempSync("/tmp/vbt-sshd-");
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, "sshd_config.d"));
  must(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vbt-sshd", "-f", path.join(dir, "host_ed25519")]);
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // privilege separation directory (Debian)
  const log = path.join(dir, "sshd.log");
  const config = path.join(dir, "sshd_config");
  let child: ChildProcess | undefined;
  let port = 0;
  for (let attempt = 0; attempt < 5 && !child; attempt++) {
    port = await freePort();
    fs.writeFileSync(config, sshdConfig(dir, port));
    const c = spawn(SSHD, ["-D", "-f", config, "-E", log], { stdio: "ignore" });
    for (let i = 0; i < 100 && c.exitCode === null; i++) {
      if (await listening(port)) {
        child = c;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!child) c.kill("SIGKILL");
  }
  if (!child) throw new Error(`sshd did not start: ${fs.existsSync(log) ? fs.readFileSync(log, "utf8").slice(-2000) : "no log"}`);
  const knownHosts = path.join(dir, "known_hosts");
  const hostKey = fs.readFileSync(path.join(dir, "host_ed25519.pub"), "utf8").split(" ").slice(0, 2).join(" ");
  fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`);
  const proc = child;
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await gone;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  return {
    dir,
    port,
    config,
    log,
    knownHosts,
    stop,
    clientOpts: (key) => [
      "-F", "/dev/null",
      "-i", key,
      "-o", "IdentitiesOnly=yes",
      "-o", "BatchMode=yes",
      "-o", "StrictHostKeyChecking=no",
      "-o", "UserKnownHostsFile=/dev/null",
      "-o", "LogLevel=ERROR",
      "-o", `Port=${port}`,
    ],
  };
}

/** A client key pair in dir. */
export function clientKey(dir: string, name = "id_ed25519"): string {
  const key = path.join(dir, name);
  must(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `vbt@source-${name}`, "-f", key]);
  return key;
}

export interface Account {
  user: string;
  dir: string;
  home: string;
  root: string;
  configDir: string;
  logDir: string;
  /** Where install-remote writes the housekeeping schedule (cron.d style), never the host's own. */
  scheduleDir: string;
  /** The schedule options install-remote and check both need. */
  schedule: string[];
  /** install-remote's arguments for this account (add --key and extras). */
  args: string[];
}

/** Names and places for a throwaway account; removed (user, group, home, files) at teardown. */
export function account(t: Teardownable, opts: { prefix?: string } = {}): Account {
  const user = `vbt-${opts.prefix ?? ""}${crypto.randomBytes(3).toString("hex")}`;
  const dir = fs.mkdtempSync(`/tmp/${user}-`);
  fs.chmodSync(dir, 0o755);
  const a: Account = {
    user,
    dir,
    home: path.join(dir, "home"),
    root: path.join(dir, "backup", "root"),
    configDir: path.join(dir, "etc"),
    logDir: path.join(dir, "log"),
    scheduleDir: path.join(dir, "cron.d"),
    schedule: [],
    args: [],
  };
  // cron, whatever the host runs: a test must not enable a systemd timer, nor drop a file a running cron reads.
  a.schedule = ["--schedule", "cron", "--schedule-dir", a.scheduleDir];
  a.args = ["--user", user, "--home", a.home, "--root", a.root, "--config-dir", a.configDir, "--log-dir", a.logDir, ...a.schedule];
  t.teardown(() => removeAccount(a));
  return a;
}

export function removeAccount(a: Account): void {
  spawnSync("/usr/sbin/userdel", [a.user], { stdio: "ignore" });
  spawnSync("/usr/sbin/groupdel", [a.user], { stdio: "ignore" });
  // Audit logs are append-only: lift the flag so they can go.
  spawnSync("/usr/bin/chattr", ["-R", "-a", a.dir], { stdio: "ignore" });
  fs.rmSync(a.dir, { recursive: true, force: true });
}

/** Run the program as root (install-remote, check), from `top` (this checkout unless told). */
export function vb(args: string[], timeoutMs = 240_000, top = TOP): Promise<RunResult> {
  return run(["/usr/bin/node", path.join(top, "dist/app/cli.js"), ...args], { env: { PATH: "/usr/bin:/bin" } }, { timeoutMs });
}

/**
 * A root-owned copy of what the program runs (launcher, bundle, production packages) in `dir`: for
 * a test that plants faults in the program itself without touching the tree other tests run from.
 */
export function programCopy(dir: string): string {
  const top = path.join(dir, "program");
  const wanted = programFiles(TOP).filter((f) => f !== "dist" && f !== "node_modules/" && !f.endsWith("/"));
  for (const f of [...wanted, "dist/app"]) fs.cpSync(path.join(TOP, f), path.join(top, f), { recursive: true, dereference: true });
  return top;
}

/** Assert a command succeeded; its output is shown only when it did not. */
export function succeeded(t: Test, r: RunResult, what: string): void {
  if (r.code !== 0) t.comment(`${what} output:\n${r.stdout.toString().slice(-3000)}\n${r.stderr.slice(-3000)}`);
  t.equal(r.code, 0, what);
}
