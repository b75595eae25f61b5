// The house rules of src/ (docs/ARCHITECTURE.md): no import circle, and no import from a lower floor
// up to a higher one. Run by `npm test` before the tests; exit 1 with what it found.
// Our own script rather than dependency-cruiser: two rules over ~80 files, and no package for CI to
// install. TypeScript's own pre-parser reads the imports (comments and strings cannot fool it);
// type-only and dynamic imports count like the rest: a type is a contract, and a lazy import is a
// dependency all the same.
//
// node scripts/check-deps.mjs [DIR]   (default: src)
import fs from "node:fs";
import path from "node:path";
import ts from "typescript";

// Floors, top first: a module may import from its own floor or any floor below. A path belongs to the
// longest prefix that names it.
const FLOORS = [
  ["entry", ["cli.ts"]],
  ["commands", ["serve.ts", "demo.ts", "remote/", "housekeeping/", "monitor/", "pgp/verify.ts", "audit/command.ts"]],
  ["protocols", ["sftp/", "scp/", "rsync/", "emulate/"]],
  ["contract", ["handler.ts"]],
  ["gate", ["gate/"]],
  ["vault", ["vault/"]],
  ["ground", ["gate/access.ts", "fsat.ts", "lazy.ts", "profile/", "audit/", "config/", "pgp/", "session.ts", "lock.ts", "errors.ts", "top.ts", "usage.ts", "throttle.ts"]],
];

function floorOf(file) {
  let best = null;
  FLOORS.forEach(([name, prefixes], rank) => {
    for (const p of prefixes) {
      if ((file === p || (p.endsWith("/") && file.startsWith(p))) && (!best || p.length > best.prefix.length)) best = { name, rank, prefix: p };
    }
  });
  return best;
}

function sources(dir, root = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p, root);
    return e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [path.relative(root, p)] : [];
  });
}

/** file -> the files of `dir` it imports (relative specifiers only; packages are not ours). */
function graph(dir) {
  const files = sources(dir);
  const known = new Set(files);
  const edges = new Map();
  for (const f of files) {
    const info = ts.preProcessFile(fs.readFileSync(path.join(dir, f), "utf8"), true, true);
    const to = new Set();
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith(".")) continue;
      const target = path.join(path.dirname(f), fileName).replace(/\.js$/, ".ts");
      if (known.has(target)) to.add(target);
    }
    edges.set(f, [...to].sort());
  }
  return edges;
}

/** Strongly connected components of more than one file (Tarjan), each with one circle through it. */
function circles(edges) {
  const index = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const found = [];
  let next = 0;
  const visit = (v) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v)) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
    }
    if (low.get(v) !== index.get(v)) return;
    const part = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      part.push(w);
    } while (w !== v);
    if (part.length > 1) found.push(part.sort());
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found.map((part) => ({ files: part, path: shortestCircle(edges, new Set(part), part[0]) }));
}

function shortestCircle(edges, within, start) {
  const from = new Map([[start, null]]);
  const queue = [start];
  while (queue.length) {
    const v = queue.shift();
    for (const w of edges.get(v)) {
      if (!within.has(w)) continue;
      if (w === start) {
        const way = [start];
        for (let u = v; u !== start; u = from.get(u)) way.splice(1, 0, u);
        return [...way, start];
      }
      if (!from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}

function upward(edges) {
  const found = [];
  for (const [f, to] of edges) {
    const mine = floorOf(f);
    for (const t of to) {
      const theirs = floorOf(t);
      if (mine && theirs && theirs.rank < mine.rank) found.push(`${f} (${mine.name}) -> ${t} (${theirs.name})`);
    }
  }
  return found;
}

const dir = process.argv[2] ?? "src";
const edges = graph(dir);
const unplaced = [...edges.keys()].filter((f) => !floorOf(f));
const found = circles(edges);
const up = upward(edges);
for (const f of unplaced) console.log(`no floor: ${f} (add it to FLOORS in scripts/check-deps.mjs)`);
for (const c of found) console.log(`circle of ${c.files.length} files: ${c.path.join(" -> ")}${c.files.length > c.path.length - 1 ? ` (also ${c.files.filter((x) => !c.path.includes(x)).join(", ")})` : ""}`);
for (const u of up) console.log(`upward: ${u}`);
const bad = unplaced.length + found.length + up.length;
console.log(`check-deps: ${edges.size} files, ${[...edges.values()].reduce((n, t) => n + t.length, 0)} imports, ${found.length} circles, ${up.length} upward imports${unplaced.length ? `, ${unplaced.length} without a floor` : ""}`);
process.exit(bad ? 1 : 0);
