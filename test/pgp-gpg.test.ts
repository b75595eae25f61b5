// The GnuPG runner's own rules, without gpg: which versions it accepts, and how a status stream,
// hostile or cut short, becomes a verdict. The verdicts on real files are in pgp-verify.
import t from "tap";
import { versionProblem, parseStatus, type RunResult } from "../src/pgp/gpg.js";
import { judgeDecryption, judgeDetached } from "../src/pgp/verdict.js";

const SIGNER = { primaries: ["AAAA"], fingerprints: new Set(["AAAA", "BBBB"]), keyIds: new Set<string>() };
const result = (status: string, more: Partial<RunResult> = {}): RunResult => ({
  exit: 0,
  signal: null,
  status: parseStatus(status.split("\n").map((l) => (l ? `[GNUPG:] ${l}` : l)).join("\n")),
  stderr: "",
  bytes: 100,
  complete: true,
  ...more,
});
const GOOD = ["BEGIN_DECRYPTION", "DECRYPTION_INFO 2 9 0", "PLAINTEXT 62 0 x", "NEWSIG", "GOODSIG AAAA S", "VALIDSIG BBBB 2026-12-07 1796656935 0 4 0 22 10 00 AAAA", "DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"];
const without = (...keys: string[]) => GOOD.filter((l) => !keys.some((k) => l.startsWith(k))).join("\n");
const details = (v: { problems: { status: string; detail: string }[] }) => v.problems.map((p) => `${p.status}: ${p.detail}`).join("; ");

t.test("gpg versions", async (t) => {
  t.equal(versionProblem("/usr/bin/gpg", "gpg (GnuPG) 2.2.40\nlibgcrypt 1.10.1\n"), null);
  t.equal(versionProblem("/usr/bin/gpg", "gpg (GnuPG) 2.4.7\n"), null);
  t.equal(versionProblem("/usr/bin/gpg", "gpg (GnuPG) 3.0.0\n"), null);
  t.match(versionProblem("/usr/bin/gpg", "gpg (GnuPG) 2.0.22\n"), /is GnuPG 2\.0; verify needs GnuPG 2\.2 or newer \(the package 'gnupg'\)/);
  t.match(versionProblem("/usr/bin/gpg", "gpg (GnuPG) 1.4.23\n"), /GnuPG 1\.4/);
  t.match(versionProblem("/usr/bin/gpg", "sq 1.0\n"), /not a GnuPG verify understands/);
});

t.test("a decryption passes only on positive evidence", async (t) => {
  t.same(judgeDecryption(result(GOOD.join("\n")), SIGNER, 100).problems, [], "decrypted, MDC, a good signature by a signer subkey");
  t.same(judgeDecryption(result(without("GOODMDC").replace("DECRYPTION_INFO 2 9 0", "DECRYPTION_INFO 0 9 2")), SIGNER, 100).problems, [], "AEAD instead of an MDC");
  const cases: [string, RunResult, RegExp][] = [
    ["no MDC, no AEAD", result(without("GOODMDC")), /DAMAGED: not integrity-protected/],
    ["BADMDC", result(without("GOODMDC", "DECRYPTION_OKAY") + "\nBADMDC\nDECRYPTION_FAILED", { exit: 2 }), /DAMAGED: modified: the integrity check failed/],
    ["begun, never ended", result(without("END_DECRYPTION", "DECRYPTION_OKAY", "GOODMDC", "NEWSIG", "GOODSIG", "VALIDSIG"), { exit: 2, stderr: "gpg: Fatal: zlib inflate problem" }), /DAMAGED: decryption stopped in the middle: gpg: Fatal: zlib/],
    ["no signature", result(without("NEWSIG", "GOODSIG", "VALIDSIG")), /BAD SIGNATURE: not signed/],
    ["BADSIG", result(without("GOODSIG", "VALIDSIG") + "\nBADSIG AAAA S", { exit: 1 }), /BAD SIGNATURE: the signature by AAAA does not verify/],
    ["another key", result(without("GOODSIG", "VALIDSIG") + "\nERRSIG CCCC 22 10 00 1796656935 9 -", { exit: 2 }), /BAD SIGNATURE: signed by key CCCC, which is not a --signer key/],
    ["a known key that is no signer", result(GOOD.join("\n").replace(/VALIDSIG BBBB(.*) AAAA$/m, "VALIDSIG DDDD$1 DDDD")), /BAD SIGNATURE: signed by DDDD, which is not a --signer key/],
    ["two signatures, one good", result(GOOD.join("\n") + "\nNEWSIG"), /BAD SIGNATURE: 1 of 2 signatures not good/],
    ["another secret key", result("NO_SECKEY 1234\nBEGIN_DECRYPTION\nDECRYPTION_FAILED\nEND_DECRYPTION", { exit: 2 }), /NOT ENCRYPTED: not encrypted to the --secret-key \(it names 1234\)/],
    ["gpg stopped reading early", result(GOOD.join("\n"), { complete: false }), /DAMAGED: gpg stopped reading before the end/],
    ["killed", result(GOOD.join("\n"), { exit: null, signal: "SIGKILL" }), /UNREADABLE: gpg was killed by SIGKILL/],
    ["a non-zero exit alone", result(GOOD.join("\n"), { exit: 2, stderr: "gpg: something\n" }), /DAMAGED: gpg exited 2: gpg: something/],
    ["nothing at all", result("", { exit: 2 }), /DAMAGED: gpg did not begin to decrypt/],
  ];
  for (const [name, r, want] of cases) t.match(details(judgeDecryption(r, SIGNER, 100)), want, name);
});

t.test("a detached signature", async (t) => {
  t.same(judgeDetached(result("NEWSIG\nGOODSIG AAAA S\nVALIDSIG AAAA 2026-12-07 1796656935 0 4 0 22 10 00 AAAA"), SIGNER, 10).problems, []);
  t.match(details(judgeDetached(result("NEWSIG\nBADSIG AAAA S", { exit: 1 }), SIGNER, 10)), /BAD SIGNATURE/);
  t.match(details(judgeDetached(result("NODATA 1", { exit: 2 }), SIGNER, 10)), /DAMAGED: no OpenPGP data/);
});

t.test("status lines a hostile file could stretch stay bounded", async (t) => {
  const s = parseStatus(`[GNUPG:] GOODSIG AAAA ${"x".repeat(100_000)}\n`.repeat(3) + "not a status line\n");
  t.equal(s.lines.get("GOODSIG")?.length, 3);
  t.ok(s.lines.get("GOODSIG")![0]!.join(" ").length <= 4096);
});
