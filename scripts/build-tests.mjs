// Transpiles the tests to dist/test/ for tap. tap's TypeScript loader (ts-node) costs each test file
// ~20 s of start-up on a slow two-core machine, most of CI's budget across 40-odd files; esbuild
// transpiles them all in well under a second. Their imports of ../src/*.js land on tsc's dist/src/.
// Types: `npm run typecheck` checks tests and sources together.
import { build } from "esbuild";
import fs from "node:fs";
import path from "node:path";

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

fs.rmSync("dist/test", { recursive: true, force: true });
await build({
  entryPoints: walk("test"),
  outdir: "dist/test",
  outbase: "test",
  bundle: false,
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "warning",
});
