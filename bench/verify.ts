// `npm run bench:verify`: `validate-backup verify` against `gpg --decrypt >/dev/null` on the same
// signed and encrypted file (1 GiB by default), in the same run, alternating, each timed with its
// peak RSS (GNU time). verify's goal: within 1.5x gpg's time, under 100 MiB. A measurement, not a
// test: it asserts only that verify said OK and gpg succeeded.
//
// Settings (environment): VB_BENCH_VERIFY_MIB (1024), VB_BENCH_ROUNDS (3), VB_BENCH_DIR (a new
// directory under /var/tmp, removed at the end).
import fs from "node:fs";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { num, median } from "./settings.js";

const TOP = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LAUNCHER = path.join(TOP, "bin/validate-backup");
const GPG = "/usr/bin/gpg";
const GNU_TIME = "/usr/bin/time";

const MIB = num("VB_BENCH_VERIFY_MIB", 1024);
const ROUNDS = num("VB_BENCH_ROUNDS", 3);

const dir = process.env.VB_BENCH_DIR ?? fs.mkdtempSync("/var/tmp/vb-bench-verify-");
const home = path.join(dir, "gnupg");
const env = { PATH: "/usr/bin:/bin", GNUPGHOME: home, LC_ALL: "C" };

function must(argv: string[], opts: { input?: string; stdout?: number } = {}): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { env, encoding: "utf8", input: opts.input, stdio: [opts.input === undefined ? "ignore" : "pipe", opts.stdout ?? "pipe", "pipe"], maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
  return r.stdout ?? "";
}

/** Wall seconds and peak RSS (MiB) of one command, by GNU time. */
function timed(argv: string[], stdout = "ignore" as const): { secs: number; rss: number; out: string } {
  const r = spawnSync(GNU_TIME, ["-f", "VBTIME %e %M", ...argv], { env, encoding: "utf8", stdio: ["ignore", stdout === "ignore" ? "pipe" : stdout, "pipe"], maxBuffer: 64 << 20 });
  const m = /VBTIME ([\d.]+) (\d+)/.exec(r.stderr ?? "");
  if (r.status !== 0 || !m) throw new Error(`${argv.join(" ")} failed (${r.status}): ${(r.stderr ?? "").slice(-400)}`);
  return { secs: Number(m[1]), rss: Number(m[2]) / 1024, out: r.stdout ?? "" };
}


try {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  must([GPG, "--batch", "--passphrase", "", "--quick-gen-key", "Bench <bench@example.invalid>", "ed25519", "sign", "never"]);
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(must([GPG, "--with-colons", "--list-keys"]))![1]!;
  must([GPG, "--batch", "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never"]);
  fs.writeFileSync(path.join(dir, "signer.asc"), must([GPG, "--armor", "--export", fpr]));
  fs.writeFileSync(path.join(dir, "secret.asc"), must([GPG, "--batch", "--armor", "--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-keys", fpr]));
  const data = path.join(dir, "data");
  fs.mkdirSync(data);
  const file = path.join(data, "backup.gpg");
  process.stdout.write(`making a ${MIB} MiB signed and encrypted file (gpg's defaults, as duplicity uses them)...\n`);
  // Random bytes, the shape of an already compressed tar volume.
  const out = fs.openSync(file, "w");
  const head = spawn("/usr/bin/head", ["-c", `${MIB}M`, "/dev/urandom"], { stdio: ["ignore", "pipe", "inherit"] });
  const enc = spawn(GPG, ["--batch", "-r", fpr, "-u", fpr, "--sign", "--encrypt"], { env, stdio: [head.stdout, out, "inherit"] });
  const code = await new Promise((r) => enc.on("close", r));
  fs.closeSync(out);
  if (code !== 0) throw new Error(`gpg --encrypt exited ${code}`);
  const rows: { gpg: { secs: number; rss: number }; ours: { secs: number; rss: number } }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const g = timed([GPG, "--batch", "--decrypt", "--output", "/dev/null", file]);
    const ours = timed([LAUNCHER, "verify", data, "--signer", path.join(dir, "signer.asc"), "--secret-key", path.join(dir, "secret.asc")]);
    if (!/\nverify: OK\n$/.test(ours.out)) throw new Error(`verify did not say OK:\n${ours.out}`);
    rows.push({ gpg: g, ours });
    process.stdout.write(`round ${round}: gpg --decrypt ${g.secs.toFixed(2)} s (${g.rss.toFixed(1)} MiB), verify ${ours.secs.toFixed(2)} s (${ours.rss.toFixed(1)} MiB), ratio ${(ours.secs / g.secs).toFixed(2)}x\n`);
  }
  const gm = median(rows.map((r) => r.gpg.secs));
  const om = median(rows.map((r) => r.ours.secs));
  const rss = Math.max(...rows.map((r) => r.ours.rss));
  process.stdout.write(`\nverify of ${MIB} MiB, median of ${ROUNDS}: ${om.toFixed(2)} s, gpg --decrypt >/dev/null ${gm.toFixed(2)} s: ${(om / gm).toFixed(2)}x (goal: at most 1.5x); peak RSS of verify ${rss.toFixed(1)} MiB (goal: under 100 MiB)\n`);
} finally {
  spawnSync("/usr/bin/gpgconf", ["--kill", "all"], { env });
  if (!process.env.VB_BENCH_DIR) fs.rmSync(dir, { recursive: true, force: true });
}
