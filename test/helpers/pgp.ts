// OpenPGP fixtures: a throwaway GnuPG home with SOURCE's key (ed25519 signing, cv25519 encryption
// subkey) and a stranger's key, their exported certificates and secret keys, and gpg itself run in
// batch mode. Everything lives in one temporary directory, and the agent is stopped on teardown.
import fs from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { spawnSync } from "node:child_process";
import type { Teardownable } from "./env.js";
import { readHeader } from "../../src/pgp/packets.js";

export interface Gpg {
  dir: string;
  home: string;
  env: NodeJS.ProcessEnv;
  /** SOURCE's primary key fingerprint, and the stranger's. */
  fpr: string;
  otherFpr: string;
  /** Exported files, mode 0644 so the unprivileged gate can read the certificates. */
  pub: string;
  sec: string;
  otherPub: string;
  otherSec: string;
  /** Run gpg --batch with our home; throws on failure. */
  gpg(args: string[], input?: Buffer | string): Buffer;
}

/** A new signing key (with a cv25519 encryption subkey unless `sign` says otherwise); its fingerprint. */
export function keyOf(g: Pick<Gpg, "gpg">, uid: string, sign = "ed25519", encrypt: string | null = "cv25519"): string {
  g.gpg(["--passphrase", "", "--quick-gen-key", uid, sign, "sign", "never"]);
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(g.gpg(["--with-colons", "--list-keys", uid]).toString())![1]!;
  if (encrypt) g.gpg(["--passphrase", "", "--quick-add-key", fpr, encrypt, "encr", "never"]);
  return fpr;
}

export function gpgHome(t: Teardownable): Gpg {
  const dir = fs.mkdtempSync("/tmp/vb-pgp-");
  fs.chmodSync(dir, 0o755);
  const home = path.join(dir, "gnupg");
  fs.mkdirSync(home, { mode: 0o700 });
  const env = { PATH: "/usr/bin:/bin", GNUPGHOME: home, LANG: "C" };
  const gpg = (args: string[], input?: Buffer | string): Buffer => {
    const r = spawnSync("gpg", ["--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", ...args], { env, input, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`gpg ${args.join(" ")}: ${r.stderr?.toString()}`);
    return r.stdout;
  };
  t.teardown(() => {
    spawnSync("gpgconf", ["--kill", "all"], { env });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const file = (name: string, data: Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, data, { mode: 0o644 });
    return p;
  };
  const base = { dir, home, env, gpg, pub: "", sec: "", otherPub: "", otherSec: "" };
  const fpr = keyOf(base, "Source <source@example.invalid>");
  const otherFpr = keyOf(base, "Stranger <stranger@example.invalid>");
  return {
    ...base,
    fpr,
    otherFpr,
    pub: file("source.asc", gpg(["--armor", "--export", fpr])),
    sec: file("source-secret.asc", gpg(["--armor", "--passphrase", "", "--export-secret-keys", fpr])),
    otherPub: file("stranger.gpg", gpg(["--export", otherFpr])),
    otherSec: file("stranger-secret.asc", gpg(["--armor", "--passphrase", "", "--export-secret-keys", otherFpr])),
  };
}

/** duplicity's command line with SOURCE's keys (encrypt and sign), volumes of 1 MiB, its cache in the home. */
export function duplicityCommand(g: Gpg, args: string[]): { argv: string[]; env: NodeJS.ProcessEnv } {
  return {
    argv: [...args, "--encrypt-key", g.fpr, "--sign-key", g.fpr, "--archive-dir", path.join(g.dir, "cache"), "--name", "t", "--volsize", "1"],
    env: { ...g.env, PASSPHRASE: "", HOME: g.dir },
  };
}

/** Run duplicity as duplicityCommand says; throws on failure. */
export function duplicity(g: Gpg, args: string[]): void {
  const { argv, env } = duplicityCommand(g, args);
  const r = spawnSync("duplicity", argv, { env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`duplicity ${args.join(" ")}: ${r.stderr}`);
}

/** A directory `src` in the home holding one file of `bytes` random bytes: what a backup is made of. */
export function randomSource(g: Gpg, bytes: number, name = "random.bin"): string {
  const src = path.join(g.dir, "src");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, name), crypto.randomBytes(bytes));
  return src;
}

/** The first packet of `bytes` (header and body), e.g. a real session-key packet. */
function firstPacket(bytes: Buffer): Buffer {
  const h = readHeader(bytes, 0);
  if (!h || typeof h === "string" || typeof h.length !== "number") throw new Error("no first packet of a definite length");
  return bytes.subarray(0, h.size + h.length);
}

/** A new-format packet with a five-octet length. */
export function packet(tag: number, body: Buffer): Buffer {
  const head = Buffer.from([0xc0 | tag, 0xff, 0, 0, 0, 0]);
  head.writeUInt32BE(body.length, 2);
  return Buffer.concat([head, body]);
}

/**
 * Files that carried `plain` past the guard before issue 14 (item 4), each with what the guard now
 * says about it: plaintext as a signature packet, or beside a signature, behind a session key
 * packet for SOURCE as "encrypted data" of no known version or of the legacy kind, after an armored
 * message's END line, and a signature file over 64 KiB.
 */
export function guardAttacks(g: Gpg, plain: Buffer): Record<string, [Buffer, RegExp]> {
  const sig = g.gpg(["-u", g.fpr, "--detach-sign"], plain);
  const pkesk = firstPacket(g.gpg(["-r", g.fpr, "-e"], plain));
  // The first byte of the plaintext is where a version byte would be.
  const version = `version ${plain[0]}`;
  return {
    "in-signature.sig": [packet(2, plain), new RegExp(`signature packet at offset 0 .*${version}`)],
    "beside-signature.sig": [Buffer.concat([sig, packet(21, plain)]), /padding packet in a detached signature/],
    "seipd-version.gpg": [Buffer.concat([pkesk, packet(18, plain)]), new RegExp(`integrity-protected encrypted data of ${version}`)],
    "sed.gpg": [Buffer.concat([pkesk, packet(9, plain)]), /symmetrically encrypted data .*without integrity protection/],
    "after-armor.asc": [Buffer.concat([g.gpg(["-r", g.fpr, "-e", "--armor"], plain), fs.readFileSync("/etc/passwd")]), /after the armor's END line/],
    "big-signature.asc": [Buffer.concat([g.gpg(["-u", g.fpr, "--armor", "--detach-sign"], plain), Buffer.alloc(65 * 1024, "\n")]), /detached signature larger than 64 KiB/],
  };
}
