// The scp sink spoken to by hand: every control line an attacker could send (conformance/attacks.md
// 22-25 and more of the same families). Each refusal is checked three ways: what the client is told,
// the audit log, and the filesystem (snapshotAll before == after, apart from what was delivered).
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { sandbox, snapshotAll, auditLines, gateIds, BIN, type Sandbox } from "./helpers/env.js";
import { gate, replies, kinds, cFile } from "./helpers/scp-wire.js";
import { OWNER_FILE } from "../src/vault/tmpfiles.js";

const OLD = "old bytes that must survive";

function tmpLeft(sb: Sandbox): string[] {
  const tmp = path.join(sb.state, "tmp");
  // The session's lock owner file (vault/tmpfiles.ts) is no upload's.
  return fs.existsSync(tmp) ? fs.readdirSync(tmp).flatMap((d) => fs.readdirSync(path.join(tmp, d)).filter((f) => f !== OWNER_FILE).map((f) => `${d}/${f}`)) : [];
}

function without(snap: Record<string, string>, ...keys: string[]): Record<string, string> {
  const copy = { ...snap };
  for (const k of keys) delete copy[k];
  return copy;
}

t.test("names that are not one new component end the transfer, as OpenSSH's sink does (22)", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  const before = snapshotAll(sb);
  const bad = ["../x", "a/b", ".", "..", "a\0b", "", "/etc/passwd", "../../outside/canary.txt"];
  const why = [/a name must be a single path component/, /a name must be a single path component/, /'\.' and '\.\.' are not file names/, /'\.' and '\.\.' are not file names/, /must not contain NUL/];
  for (const [i, n] of bad.entries()) {
    // What follows the bad line would otherwise be taken as meant: it is never read.
    const r = await gate(sb, "scp -t d", Buffer.concat([Buffer.from(`C0644 5 ${n}\n`), cFile("good.gpg", "hello")]));
    // JSON: a name with NUL in a test's message would make CI's grep read its log as binary.
    t.equal(r.code, 1, `${JSON.stringify(n)}: non-zero`);
    t.equal(kinds(r.stdout), "ok fatal", `${JSON.stringify(n)}: a fatal line, nothing more`);
    t.match(replies(r.stdout)[1], { text: new RegExp(`refused: .*the transfer ends here`) });
    if (why[i]) t.match(replies(r.stdout)[1], { text: why[i] });
  }
  t.equal(auditLines(sb).filter((l) => l.event === "error" && l.code === "NOT_ALLOWED").length, bad.length, "each audited");
  t.same(snapshotAll(sb), before, "nothing appeared, good.gpg neither");
});

t.test("a newline ends the line: the rest is data, the stream falls out of step, nothing is stored", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  const before = snapshotAll(sb);
  const r = await gate(sb, "scp -t d", "C0644 5 x\ny\nhello\0");
  t.equal(kinds(r.stdout), "ok ok fatal");
  t.match(replies(r.stdout)[2], { text: /protocol error: expected a reply byte/ });
  t.not(r.code, 0);
  t.same(snapshotAll(sb), before);
  t.same(tmpLeft(sb), []);
  t.ok(auditLines(sb).some((l) => l.event === "upload-abandoned" && l.path === "d/x"));
});

t.test("an existing file is never replaced (23)", async (t) => {
  const sb = sandbox(t, { files: { "d/existing.gpg": OLD } });
  const before = snapshotAll(sb);
  // Named in the C line, with times that must not reach it either.
  let r = await gate(sb, "scp -t d", "T1000000000 0 1000000000 0\nC0644 3 existing.gpg\n");
  t.equal(kinds(r.stdout), "ok ok warn");
  t.match(replies(r.stdout)[2], { text: /append-only: 'd\/existing\.gpg' already exists and cannot be overwritten/ });
  t.equal(r.code, 1);
  // The target itself: the bytes would land on it, whatever name the C line gives.
  r = await gate(sb, "scp -t d/existing.gpg", "C0644 3 innocent.gpg\n");
  t.equal(kinds(r.stdout), "ok warn");
  t.match(replies(r.stdout)[1], { text: /'d\/existing\.gpg' already exists/ });
  t.same(snapshotAll(sb), before, "byte-identical, same times");
  t.match(auditLines(sb).filter((l) => l.event === "refused"), [{ code: "EXISTS", path: "d/existing.gpg" }, { code: "EXISTS", path: "d/existing.gpg" }]);

  // A target that does not exist yet takes the first file; the second would replace it.
  r = await gate(sb, "scp -t d/new.gpg", Buffer.concat([cFile("a", "first"), cFile("b", "second")]));
  t.equal(kinds(r.stdout), "ok ok ok warn");
  t.equal(fs.readFileSync(path.join(sb.root, "d/new.gpg"), "utf8"), "first");
  t.equal(r.code, 1);
});

t.test("directories: '..' and E without D refused, no D without -r, nesting bounded (24)", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  const before = snapshotAll(sb);
  // "D .." and then a file meant inside it: the transfer ends at the D line; the file lands nowhere
  // (once it landed in d/, one level above where the client meant it).
  let r = await gate(sb, "scp -r -t d", Buffer.concat([Buffer.from("D0755 0 ..\n"), cFile("inside.gpg", "hello"), Buffer.from("E\n")]));
  t.equal(kinds(r.stdout), "ok fatal");
  t.match(replies(r.stdout)[1], { text: /'\.\.' refused: .*the transfer ends here/ });
  t.match(auditLines(sb).at(-2), { event: "error", code: "NOT_ALLOWED" });
  r = await gate(sb, "scp -r -t d", "D0755 0 a/b\nE\n");
  t.equal(kinds(r.stdout), "ok fatal");
  r = await gate(sb, "scp -r -t d", "E\n");
  t.equal(kinds(r.stdout), "ok fatal");
  t.match(replies(r.stdout)[1], { text: /E line without a matching D line/ });
  t.match(auditLines(sb).at(-2), { event: "error", code: "BAD_REQUEST", reason: /E line without a matching D line/ });
  r = await gate(sb, "scp -t d", "E\n");
  t.equal(kinds(r.stdout), "ok fatal");
  r = await gate(sb, "scp -t d", "D0755 0 sub\n");
  t.equal(kinds(r.stdout), "ok fatal");
  t.match(replies(r.stdout)[1], { text: /received a directory without -r/ });
  r = await gate(sb, "scp -d -t d/keep.gpg", "");
  t.equal(kinds(r.stdout), "fatal");
  t.match(replies(r.stdout)[0], { text: /'d\/keep\.gpg': not a directory/ });
  t.same(snapshotAll(sb), before);

  r = await gate(sb, "scp -r -t d", "D0755 0 n\n".repeat(70));
  t.equal(kinds(r.stdout), ["ok", ...Array(64).fill("ok"), "fatal"].join(" "));
  t.match(replies(r.stdout).at(-1), { text: /nested deeper than 64 levels/ });
  const deepest = path.join(sb.root, "d", ...Array(64).fill("n"));
  t.ok(fs.statSync(deepest).isDirectory());
  t.same(fs.readdirSync(deepest), [], "nothing below level 64");
});

t.test("modes are masked: never setuid, setgid or executable; D with 0000 stays usable (24)", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  const r = await gate(sb, "scp -r -t d", Buffer.concat([cFile("suid.gpg", "x", "4755"), cFile("none.gpg", "y", "0000"), Buffer.from("D7777 0 dir\n"), cFile("in.gpg", "z", "6777"), Buffer.from("E\n")]));
  t.equal(r.code, 0, r.stderr);
  const mode = (p: string) => fs.statSync(path.join(sb.root, "d", p)).mode & 0o7777;
  t.equal(mode("suid.gpg"), 0o640);
  t.equal(mode("none.gpg"), 0o600, "owner read and write always, so the key can fetch it back");
  t.equal(mode("dir"), 0o750);
  t.equal(mode("dir/in.gpg"), 0o640);
});

t.test("sizes: oversize then EOF, undersize, over the limit, out of range (25)", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD }, config: { limits: { maxFileBytes: 10 } } });
  const before = snapshotAll(sb);
  let r = await gate(sb, "scp -t d", "C0644 10 big.gpg\n0123");
  t.equal(kinds(r.stdout), "ok ok", "the client vanished: nobody to tell");
  t.not(r.code, 0);
  t.match(auditLines(sb).filter((l) => l.event === "error").at(-1), { reason: /connection closed after 4 of 10 bytes of 'd\/big\.gpg': nothing stored/ });
  t.same(snapshotAll(sb), before, "nothing under the final name");
  t.same(tmpLeft(sb), [], "the temporary file is gone");

  r = await gate(sb, "scp -t d", "C0644 3 small.gpg\nhello\0");
  t.equal(kinds(r.stdout), "ok ok fatal");
  t.same(snapshotAll(sb), before);

  r = await gate(sb, "scp -t d", Buffer.concat([Buffer.from("C0644 11 huge.gpg\n"), cFile("fits.gpg", "0123456789")]));
  t.equal(kinds(r.stdout), "ok warn ok ok");
  t.match(replies(r.stdout)[1], { text: /11 bytes is more than the limit of 10 bytes per file/ });
  t.equal(r.code, 1);
  t.same(without(snapshotAll(sb), "root/d/fits.gpg"), before);

  r = await gate(sb, "scp -t d", "C0644 99999999999999999999 x\n");
  t.equal(kinds(r.stdout), "ok fatal");
  t.match(replies(r.stdout)[1], { text: /size out of range/ });
  t.same(without(snapshotAll(sb), "root/d/fits.gpg"), before);
});

t.test("the client's own errors: a file it could not send whole is not stored", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  const before = snapshotAll(sb);
  const r = await gate(sb, "scp -t d", Buffer.concat([Buffer.from("C0644 5 bad.gpg\nhello\x01scp: bad.gpg: read error\n"), cFile("good.gpg", "fine")]));
  t.equal(kinds(r.stdout), "ok ok warn ok ok");
  t.match(replies(r.stdout)[2], { text: /'d\/bad\.gpg'|d\/bad\.gpg: not stored: the client could not send it whole/ });
  t.equal(r.code, 1);
  t.same(without(snapshotAll(sb), "root/d/good.gpg"), before);

  const r2 = await gate(sb, "scp -t d", "\x02scp: giving up\nC0644 5 late.gpg\n");
  t.equal(kinds(r2.stdout), "ok");
  t.equal(r2.code, 1);
  t.ok(auditLines(sb).some((l) => l.event === "client-error" && l.fatal === true));
  t.notOk(fs.existsSync(path.join(sb.root, "d/late.gpg")));

  const r3 = await gate(sb, "scp -t d", "X0644 5 what\nT1 2\n");
  t.equal(kinds(r3.stdout), "ok fatal");
  t.match(replies(r3.stdout)[1], { text: /expected a control record/ });
});

t.test("times from T apply to new files; a killed session leaves nothing under the final name", async (t) => {
  const sb = sandbox(t, { files: { "d/keep.gpg": OLD } });
  let r = await gate(sb, "scp -t d", Buffer.concat([Buffer.from("T1000000000 500000 1000000001 0\n"), cFile("t.gpg", "t")]));
  t.equal(kinds(r.stdout), "ok ok ok ok");
  t.equal(fs.statSync(path.join(sb.root, "d/t.gpg")).mtimeMs, 1_000_000_000_500);
  const before = snapshotAll(sb);

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    const { name } = gateIds();
    const argv = name ? ["setpriv", `--reuid=${name}`, `--regid=${name}`, "--init-groups", BIN, "--config", sb.config] : [BIN, "--config", sb.config];
    const child = spawn(argv[0]!, argv.slice(1), { env: { PATH: "/usr/bin:/bin", SSH_ORIGINAL_COMMAND: "scp -t d" }, stdio: ["pipe", "pipe", "pipe"] });
    let got = 0;
    const acked = new Promise<void>((resolve) =>
      child.stdout.on("data", (d: Buffer) => {
        got += d.length;
        if (got >= 2) resolve();
      }),
    );
    child.stdin.write(`C0644 1048576 ${signal}.gpg\n`);
    child.stdin.write(Buffer.alloc(65536, 7));
    await acked;
    // The bytes sent so far are in the temporary file, which no client can name.
    for (let i = 0; i < 600 && tmpLeft(sb).length === 0; i++) await new Promise((res) => setTimeout(res, 100));
    t.equal(tmpLeft(sb).length, 1, `${signal}: an upload in progress lives in state/tmp`);
    const closed = new Promise((res) => child.on("close", res));
    child.kill(signal);
    await closed;
    t.same(snapshotAll(sb), before, `${signal}: nothing under the final name`);
  }
  t.ok(auditLines(sb).some((l) => l.event === "upload-abandoned" && l.path === "d/SIGTERM.gpg"), "SIGTERM: abandoned and audited");
  // SIGKILL leaves its temporary file: the next writing session sweeps it.
  r = await gate(sb, "scp -t d", "");
  t.equal(r.code, 0);
  t.same(tmpLeft(sb), []);
  t.ok(auditLines(sb).some((l) => l.event === "swept"));
});
