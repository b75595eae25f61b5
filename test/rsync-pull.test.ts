// Real rsync pulls through the gate: a tree comes back byte-identical; nothing missing, and nothing
// through a link, is ever read.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import { sandbox, snapshotAll } from "./helpers/env.js";
import { rsyncClient, localTree, contents, lastSession } from "./helpers/rsync-client.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

t.test("a pull restores a pushed tree byte-identical", async (t) => {
  const sb = sandbox(t);
  const src = localTree(t, { "a.gpg": "A\n", "sub/b.gpg": Buffer.alloc(300_000, 7), "sub/deeper/c.gpg": "C\n", "name with space.gpg": "s\n" });
  let r = await rsyncClient(sb, ["-a", `${src}/`, "h:backup/"]);
  t.equal(r.code, 0, r.stderr);
  const dst = localTree(t);
  r = await rsyncClient(sb, ["-a", "h:backup/", `${dst}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(dst), contents(src));
  t.match(lastSession(sb)[0], { decision: "allow", command: "rsync --server --sender -logDtpre.iLsfxCIvu . backup/" });

  // One file, by its absolute path, with -R: the same layout as a stock server would give.
  const one = localTree(t);
  r = await rsyncClient(sb, ["-aR", "h:backup/sub/b.gpg", `${one}/`]);
  t.equal(r.code, 0, r.stderr);
  t.same(contents(one), { "backup/sub/b.gpg": contents(src)["sub/b.gpg"] });
});

t.test("a pull of what does not exist, or through a planted link, is refused", async (t) => {
  const sb = sandbox(t, { files: { "d/a.gpg": "A\n" } });
  fs.symlinkSync(sb.outside, path.join(sb.root, "out"));
  fs.symlinkSync(path.join(sb.outside, "canary.txt"), path.join(sb.root, "d", "canary"));
  const before = snapshotAll(sb);
  for (const [remote, reason] of [
    ["h:missing/", /'missing': no such file or directory/],
    ["h:out/", /'out' is a symbolic link, which is never followed/],
    ["h:out/sub/secret", /'out\/sub\/secret': crosses a symbolic link/],
    ["h:d/canary", /'d\/canary' is a symbolic link/],
  ] as const) {
    const dst = localTree(t);
    const r = await rsyncClient(sb, ["-a", remote, `${dst}/`]);
    t.not(r.code, 0, remote);
    t.match(r.stderr, reason, remote);
    t.same(contents(dst), {}, `${remote}: nothing arrived`);
    t.match(lastSession(sb).find((l) => l.event === "error"), { reason });
  }
  // A link inside a pulled directory travels as a link (with -l) and is never followed.
  const dst = localTree(t);
  const r = await rsyncClient(sb, ["-a", "h:d/", `${dst}/`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readlinkSync(path.join(dst, "canary")), path.join(sb.outside, "canary.txt"));
  t.same(snapshotAll(sb), before);
});
