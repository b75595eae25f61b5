// The program's top directory (where bin/, dist/ and package.json are), from wherever the running
// code was loaded: dist/app/ (the bundle the launcher runs), dist/src/ (tsc's output) or src/ (the
// tests run the TypeScript itself). A fixed number of "../" would be right for only one of them.
import path from "node:path";
import { fileURLToPath } from "node:url";

function topOf(file: string): string {
  for (const marker of ["/dist/", "/src/"]) {
    const i = file.lastIndexOf(marker);
    if (i > 0) return file.slice(0, i);
  }
  return path.resolve(path.dirname(file), "..");
}

export const TOP = topOf(fileURLToPath(import.meta.url));
