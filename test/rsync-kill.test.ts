// A real rsync push killed midway (acceptance item 3, attacks.md item 38): nothing partial ever
// appears in the root, staging goes, and the next push delivers the file.
import t from "tap";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { sandbox, snapshotAll, auditLines } from "./helpers/env.js";
import { rsyncClient, rsyncClientSpawn, localTree, contents, leftovers, until } from "./helpers/rsync-client.js";

// Each case runs the gate several times; a loaded machine needs more than the default 300 s.
t.setTimeout(10 * 60_000);

const OLD = { "d/existing.gpg": "old volume\n", "keep.gpg": "keep\n" };

t.test("a push killed midway leaves nothing partial in the root, and the next push works", async (t) => {
  const sb = sandbox(t, { files: OLD });
  const big = crypto.randomBytes(24 * 1024 * 1024);
  const src = localTree(t, { "big.gpg": big, "small.gpg": "s\n" });
  const before = snapshotAll(sb);
  const child = rsyncClientSpawn(sb, ["-a", "--bwlimit=1500", `${src}/`, "h:./"]);
  const staging = path.join(sb.state, "staging");
  const partial = () => {
    const found: number[] = [];
    const walk = (p: string) => {
      for (const n of fs.existsSync(p) ? fs.readdirSync(p) : []) {
        const st = fs.lstatSync(path.join(p, n));
        if (st.isDirectory()) walk(path.join(p, n));
        else if (st.isFile()) found.push(st.size);
      }
    };
    walk(staging);
    return found.some((s) => s > 256 * 1024);
  };
  await until("a partial file in staging", partial);
  child.kill("SIGKILL");
  await until("the session to end", () => auditLines(sb).some((l) => l.event === "session-end"));
  const end = auditLines(sb).find((l) => l.event === "session-end");
  t.not(end?.exit, 0, "the session failed");
  t.equal(end?.published, 0, "nothing published");
  t.same(snapshotAll(sb), before, "nothing partial (or whole) appeared in the root");
  t.same(leftovers(sb), [], "staging removed");

  const r = await rsyncClient(sb, ["-a", `${src}/`, "h:./"]);
  t.equal(r.code, 0, r.stderr);
  t.equal(contents(sb.root)["big.gpg"], crypto.createHash("sha256").update(big).digest("hex"), "the next push delivers the whole file");
  t.same(leftovers(sb), []);
});
