// `validate-backup demo`: a local REMOTE in a temporary directory, driven by the real OpenSSH sftp
// client through the real gate: one backup accepted, then a delete and an overwrite refused.
// Needs no root and no sshd: `sftp -D` starts the server command directly, as sshd would.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { TOP } from "./top.js";
import { usageText } from "./usage.js";

const SFTP = "/usr/bin/sftp";
const BIN = path.join(TOP, "bin/validate-backup");

function sha(file: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex").slice(0, 16);
}

export async function demo(args: string[]): Promise<number> {
  const keep = args.includes("--keep");
  if (args.some((a) => a !== "--keep")) {
    process.stderr.write(`validate-backup demo: unknown argument '${String(args.find((a) => a !== "--keep")).slice(0, 64)}'\n${usageText("demo")}\n`);
    return 2;
  }
  if (!fs.existsSync(SFTP)) {
    process.stderr.write(`validate-backup demo: needs the OpenSSH client (${SFTP}): apt-get install openssh-client\n`);
    return 2;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "validate-backup-demo-"));
  const root = path.join(dir, "remote", "backups");
  const source = path.join(dir, "source");
  fs.mkdirSync(root, { recursive: true });
  fs.mkdirSync(`${root}.state`, { mode: 0o700 });
  fs.mkdirSync(source);
  const config = path.join(dir, "demo.json");
  const audit = path.join(dir, "audit.log");
  fs.writeFileSync(config, JSON.stringify({ label: "demo", root, audit: { file: audit } }, null, 2));
  // A finished duplicity full set (volume + manifest), dated an hour ago: duplicity's resume rule
  // lets an unfinished set's last volume be re-sent, a finished set is final.
  const t = new Date(Date.now() - 3600_000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const volume = `duplicity-full.${t}.vol1.difftar.gpg`;
  const manifest = `duplicity-full.${t}.manifest.gpg`;
  fs.writeFileSync(path.join(source, volume), crypto.randomBytes(64 * 1024));
  fs.writeFileSync(path.join(source, manifest), crypto.randomBytes(512));
  fs.writeFileSync(path.join(source, "evil.gpg"), "an attacker's replacement\n");

  // The command sshd would run for the key; SSH_ORIGINAL_COMMAND is what sftp asks for.
  const server = `/usr/bin/env SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server ${BIN} --config ${config}`;
  // A step "worked as designed" when sftp succeeded (allowed) or failed with our refusal message.
  const step = (title: string, batch: string, expect: "ok" | "refused"): boolean => {
    process.stdout.write(`\n== ${title}\n`);
    const r = spawnSync(SFTP, ["-b", "-", "-D", server], { cwd: source, input: batch, encoding: "utf8" });
    const text = `${r.stdout}${r.stderr ?? ""}`.trimEnd();
    process.stdout.write(`${text.replace(/^/gm, "   ")}\n   -> sftp exit status ${r.status}\n`);
    return expect === "ok" ? r.status === 0 : r.status !== 0 && /append-only/.test(text);
  };

  process.stdout.write(`validate-backup demo in ${dir}\nREMOTE backup root: ${root}\nconfig: ${config}\n`);
  const okPut = step("SOURCE uploads a backup: a volume and its manifest (allowed)", `put ${volume}\nput ${manifest}\nls -l\n`, "ok");
  const stored = path.join(root, volume);
  const before = fs.existsSync(stored) ? sha(stored) : "missing";
  const rm = step("A thief with SOURCE's key tries to delete it (refused)", `rm ${volume}\n`, "refused");
  const over = step("…and to overwrite it (refused)", `put evil.gpg ${volume}\n`, "refused");
  const ren = step("…and to rename it away (refused)", `rename ${volume} gone.gpg\n`, "refused");
  const after = fs.existsSync(stored) ? sha(stored) : "missing";

  process.stdout.write(`\n== The stored volume: sha256 ${before} before the attacks, ${after} after\n`);
  process.stdout.write("\n== The audit log (decisions and refusals):\n");
  for (const line of fs.readFileSync(audit, "utf8").split("\n").filter(Boolean)) {
    const e = JSON.parse(line) as Record<string, unknown>;
    if (["request", "refused", "publish"].includes(String(e.event)))
      process.stdout.write(`   ${[e.event, e.decision, e.reason ?? e.path ?? e.command].filter(Boolean).join("  ")}\n`);
  }
  const good = okPut && rm && over && ren && before !== "missing" && before === after;
  process.stdout.write(`\n${good ? "OK: the backup was added; delete, overwrite and rename were refused." : "UNEXPECTED: see above."}\n`);
  if (keep) process.stdout.write(`(kept ${dir})\n`);
  else fs.rmSync(dir, { recursive: true, force: true });
  return good ? 0 : 1;
}
