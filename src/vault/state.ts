// The `state` directory: per-session temporary and staging areas, named <pid>-<random>. A
// session killed with SIGKILL cannot clean up; the next session sweeps areas whose pid is gone.
import fs from "node:fs";
import path from "node:path";
import type { Audit } from "../audit/log.js";
import { pidAlive } from "../lock.js";

export const AREAS = ["tmp", "staging", "locks", "quota"] as const;

export function ensureState(state: string): void {
  for (const a of AREAS) {
    try {
      fs.mkdirSync(path.join(state, a), { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
}

export function sweepStale(state: string, audit: Audit): void {
  for (const area of ["tmp", "staging"]) {
    const dir = path.join(state, area);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const pid = Number.parseInt(name, 10);
      if (pidAlive(pid)) continue;
      try {
        removeTree(path.join(dir, name));
        audit.event("swept", { area, name });
      } catch {
        /* try again next time */
      }
    }
  }
}

/** rm -rf that also gets through directories left without write permission (rsync -p keeps 0555). */
export function removeTree(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
    return;
  } catch {
    /* a directory we may not write: open them up, then again */
  }
  const openUp = (d: string): void => {
    const st = fs.lstatSync(d);
    if (!st.isDirectory()) return;
    if ((st.mode & 0o700) !== 0o700) fs.chmodSync(d, 0o700);
    for (const n of fs.readdirSync(d)) openUp(path.join(d, n));
  };
  try {
    openUp(p);
  } catch {
    /* best effort */
  }
  fs.rmSync(p, { recursive: true, force: true });
}
