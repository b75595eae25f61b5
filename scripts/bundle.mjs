// Bundles the program into dist/app/ for the launcher. Every SSH session starts a fresh node, and
// loading ~160 ES modules one file at a time (zod alone is 94) cost most of a session's start-up;
// one file per lazily loaded part keeps `import()` lazy: openpgp, the SFTP server and root's tools
// are still read only by the sessions that use them. tsc has type-checked the same sources before.
import { build } from "esbuild";
import fs from "node:fs";

// Chunk names carry a content hash: without a clean start, every build would leave the old ones.
fs.rmSync("dist/app", { recursive: true, force: true });

await build({
  // The hashing worker is its own file: a Worker starts from a file, next to the chunk that starts it;
  // so is the step of an rsync pull that runs in its sandbox (a process of its own, node modules only).
  entryPoints: { cli: "src/cli.ts", "hash-worker": "src/vault/hash-worker.ts", "jail-entry": "src/rsync/jail-entry.ts" },
  outdir: "dist/app",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  // A CommonJS dependency's require() of node's own modules needs a real require.
  banner: { js: "import { createRequire as __vbCreateRequire } from 'node:module'; const require = __vbCreateRequire(import.meta.url);" },
  legalComments: "none",
  logLevel: "warning",
});
