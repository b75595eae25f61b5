// Bundles the program into dist/app/ for the launcher. Every SSH session starts a fresh node, and
// loading ~160 ES modules one file at a time (zod alone is 94) cost most of a session's start-up;
// one file per lazily loaded part keeps `import()` lazy: openpgp, the SFTP server and root's tools
// are still read only by the sessions that use them. tsc has type-checked the same sources before.
//
// The files are CommonJS, split as ES modules first: esbuild splits only ES modules, but node 20
// loads ES modules through its asynchronous loader (with fs/promises, readline and node:stream)
// and makes an ES facade of each builtin imported, reading every export (node:crypto's webcrypto
// among them); loaded by require() a refused command starts ~25 ms sooner. Each chunk is turned
// into CommonJS on its own (its imports become require(), its import() a require() in a promise),
// with dist/app/package.json saying so.
import { build, transform } from "esbuild";
import fs from "node:fs";
import path from "node:path";

// Chunk names carry a content hash: without a clean start, every build would leave the old ones.
fs.rmSync("dist/app", { recursive: true, force: true });

const esm = await build({
  // The hashing worker is its own file: a Worker starts from a file, next to the chunk that starts it;
  // so is the step of an rsync pull that runs in its sandbox (a process of its own, node modules only).
  entryPoints: { cli: "src/cli.ts", "hash-worker": "src/vault/hash-worker.ts", "jail-entry": "src/rsync/jail-entry.ts" },
  outdir: "dist/app",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  legalComments: "none",
  logLevel: "warning",
  write: false,
});

// import.meta.url of a chunk: its own file, as an ES module would see it.
const META_URL = "__vbImportMetaUrl";
for (const out of esm.outputFiles) {
  const cjs = await transform(out.text, {
    format: "cjs",
    platform: "node",
    target: "node20",
    define: { "import.meta.url": META_URL },
    legalComments: "none",
    logLevel: "warning",
  });
  // What is loaded later stays loaded later, now by require(): a chunk, or a builtin.
  let code = cjs.code.replace(/\bimport\((["'](?:\.\/|node:)[^"'()]+["'])\)/g, "Promise.resolve().then(() => require($1))");
  if (/\bimport\(["'](?:\.|node:)/.test(code)) throw new Error(`${out.path}: an import() left that require() cannot replace`);
  if (code.includes(META_URL)) code = `const ${META_URL} = require("node:url").pathToFileURL(__filename).href;\n${code}`;
  fs.mkdirSync(path.dirname(out.path), { recursive: true });
  fs.writeFileSync(out.path, code);
}
fs.writeFileSync("dist/app/package.json", '{ "type": "commonjs" }\n');
