// The SOURCE side of the duplicity end-to-end tests: a throwaway GnuPG key, a data tree, the
// duplicity command line through the test sshd, and a content listing to compare restores with.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { run, type RunResult } from "./env.js";
import { haveSshd, clientKey, vb, succeeded, type Account, type Sshd } from "./sshd.js";

export const DUPLICITY = "/usr/bin/duplicity";
export const haveDuplicity = haveSshd && fs.existsSync(DUPLICITY) && fs.existsSync("/usr/bin/gpg");

export interface Source {
  dir: string;
  data: string;
  gnupg: string;
  fpr: string;
  key: string;
}

/** A SOURCE in dir: signing and encryption key, ssh key, and `files` (relative path -> bytes) in data/. */
export function makeSource(dir: string, files: Record<string, Buffer | string>): Source {
  const gnupg = path.join(dir, "gnupg");
  fs.mkdirSync(gnupg, { mode: 0o700 });
  const env = { ...process.env, GNUPGHOME: gnupg };
  // future-default: ed25519 signing + cv25519 encryption, generated in a blink.
  const gen = spawnSync("/usr/bin/gpg", ["--batch", "--passphrase", "", "--quick-gen-key", "vbt backup <vbt@source.invalid>", "future-default", "default", "never"], { env, encoding: "utf8" });
  if (gen.status !== 0) throw new Error(gen.stderr);
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(spawnSync("/usr/bin/gpg", ["--with-colons", "--list-secret-keys"], { env, encoding: "utf8" }).stdout)![1]!;
  const data = path.join(dir, "data");
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(data, rel)), { recursive: true });
    fs.writeFileSync(path.join(data, rel), content);
  }
  return { dir, data, gnupg, fpr, key: clientKey(dir) };
}

/** argv and environment of one duplicity run, as a SOURCE's cron job would start it. */
export function duplicityCommand(src: Source, sshd: Sshd, name: string, args: string[]): { argv: string[]; env: NodeJS.ProcessEnv } {
  const sshOptions = `-oIdentityFile=${src.key} -oUserKnownHostsFile=${sshd.knownHosts} -oIdentitiesOnly=yes -oStrictHostKeyChecking=yes -oLogLevel=ERROR`;
  fs.mkdirSync(path.join(src.dir, "tmp"), { recursive: true });
  const argv = [
    DUPLICITY,
    ...args,
    "--encrypt-key", src.fpr,
    "--sign-key", src.fpr,
    "--gpg-options", "--pinentry-mode=loopback",
    "--archive-dir", path.join(src.dir, "cache"),
    "--name", name,
    "--num-retries", "1",
    "--ssh-options", sshOptions,
    "--tempdir", path.join(src.dir, "tmp"),
  ];
  const env = { PATH: "/usr/bin:/bin", HOME: src.dir, GNUPGHOME: src.gnupg, PASSPHRASE: "", SIGN_PASSPHRASE: "", LANG: "C.UTF-8" };
  return { argv, env };
}

/** Run duplicity to the end; `t.comment`s how long it took (the figure that sizes this suite). */
export async function duplicity(t: { comment: (...m: unknown[]) => void }, src: Source, sshd: Sshd, name: string, args: string[]): Promise<RunResult> {
  const { argv, env } = duplicityCommand(src, sshd, name, args);
  const started = Date.now();
  const r = await run(argv, { env }, { timeoutMs: 300_000 });
  t.comment(`duplicity ${args[0]} ${args.at(-1)?.replace(/^.*\/\/[^/]*\//, "") ?? ""}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return r;
}

/** relative path -> sha256 of every file below dir. */
export function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string, rel: string) => {
    for (const n of fs.readdirSync(p).sort()) {
      const q = path.join(p, n);
      if (fs.lstatSync(q).isDirectory()) walk(q, `${rel}${n}/`);
      else out[rel + n] = sha256(fs.readFileSync(q));
    }
  };
  walk(dir, "");
  return out;
}

export const sha256 = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");

export function url(scheme: string, a: Account, sshd: Sshd, sub: string): string {
  return `${scheme}://${a.user}@127.0.0.1:${sshd.port}/${a.root}/${sub}`;
}

/** A directory in the account's root, as the account would have made it (paramiko+scp and rsync do not). */
export function remoteDir(a: Account, sub: string): string {
  const d = path.join(a.root, sub);
  fs.mkdirSync(d, { mode: 0o750 });
  const { uid, gid } = fs.statSync(`${a.root}.state`);
  fs.chownSync(d, uid, gid);
  return d;
}

export async function install(t: Parameters<typeof succeeded>[0], a: Account, src: Source, sshd: Sshd): Promise<void> {
  succeeded(t, await vb(["install-remote", ...a.args, "--key", `${src.key}.pub`, "--sshd-config", sshd.config]), "install-remote");
}
