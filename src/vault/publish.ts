// Publishing an rsync staging tree. rsync received into state/staging/<sid>/t and has exited; each
// new regular file there is linked into the live tree at the same relative path by the vault, which
// never replaces. The walk never follows a link: directories are opened fd by fd with O_NOFOLLOW.
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import { VbError, type AuditFields } from "../errors.js";
import { cleanBytes } from "../audit/sanitize.js";
import type { Vault } from "./vault.js";
import { vpath, MAX_DEPTH, type VPath } from "./paths.js";
import { at, openDirAt, closeQuietly, DIR_FLAGS, READ_FLAGS } from "../fsat.js";

const SYNC = "/usr/bin/sync";
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Sent files not stored named one by one to the client; past this only counted (the audit log has all). */
const NAMED = 20;

export interface PublishResult {
  published: number;
  skipped: number;
  /**
   * What was sent and not stored, for every reason but "the name exists with the same bytes" (which
   * rsync's own --ignore-existing skips silently too): `count` of them, the first few named.
   */
  unstored: { count: number; first: Array<{ path: string; reason: string }> };
}

// What is never published, by type: only plain regular files become backup files.
const NOT_PUBLISHED: [(st: fs.Stats) => boolean, string][] = [
  [(st) => st.isSymbolicLink(), "symbolic link (never published)"],
  [(st) => st.isFIFO(), "FIFO (never published)"],
  [(st) => st.isSocket(), "socket (never published)"],
  [(st) => st.isBlockDevice() || st.isCharacterDevice(), "device (never published)"],
  [(st) => st.isFile() && st.nlink !== 1, "hard-linked file (push without -H)"],
  [(st) => !st.isFile() && !st.isDirectory(), "not a regular file"],
];

function whyNot(st: fs.Stats): string | undefined {
  return NOT_PUBLISHED.find(([test]) => test(st))?.[1];
}

class Publisher {
  readonly result: PublishResult = { published: 0, skipped: 0, unstored: { count: 0, first: [] } };

  constructor(
    private readonly vault: Vault,
    /** The whole filesystem was flushed before publishing: no fsync per file. */
    private readonly synced: boolean,
  ) {}

  private get session() {
    return this.vault.session;
  }

  /**
   * `counted`: the vault's admission counted it already. `told`: what the client is told (default:
   * the reason); null for the one skip it is not told about, an existing name with the same bytes.
   * `fields`: the refusal's own audit fields (an incremental whose start is taken).
   */
  private skip(display: string, reason: string, counted = false, told: string | null = reason, fields?: AuditFields): void {
    this.result.skipped++;
    if (!counted) this.session.counters.skipped++;
    this.session.audit.event("skipped", { ...fields, path: display, reason, via: "rsync" });
    if (told === null) return;
    const u = this.result.unstored;
    if (u.count++ < NAMED) u.first.push({ path: display, reason: told });
  }

  walk(dirFd: number, comps: string[]): void {
    const entries = fs.readdirSync(at(dirFd), { withFileTypes: true, encoding: "buffer" });
    for (const entry of entries) {
      let name: string;
      try {
        name = utf8.decode(entry.name);
      } catch {
        this.skip([...comps, cleanBytes(entry.name)].join("/"), "name is not valid UTF-8");
        continue;
      }
      const v = vpath([...comps, name]);
      if (entry.isDirectory()) this.directory(dirFd, name, v);
      else if (entry.isFile()) this.file(dirFd, name, v);
      else this.other(dirFd, name, v); // never opened: opening a device or FIFO can have effects
    }
  }

  private other(dirFd: number, name: string, v: VPath): void {
    let reason = "not a regular file";
    try {
      reason = whyNot(fs.lstatSync(at(dirFd, name))) ?? reason;
    } catch {
      /* vanished: still not published */
    }
    this.skip(v.display, reason);
  }

  private directory(parentFd: number, name: string, v: VPath): void {
    if (v.comps.length > MAX_DEPTH) return this.skip(v.display, `deeper than ${MAX_DEPTH} levels`);
    try {
      this.vault.mkdirp(v);
    } catch (e) {
      if (e instanceof VbError) return this.skip(v.display, e.message, false, e.message, e.audit);
      throw e;
    }
    const fd = openDirAt(parentFd, name);
    try {
      this.walk(fd, [...v.comps]);
    } finally {
      closeQuietly(fd);
    }
  }

  private file(dirFd: number, name: string, v: VPath): void {
    let fd: number;
    try {
      fd = fs.openSync(at(dirFd, name), READ_FLAGS);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ELOOP: a symbolic link; ENXIO: a socket; EACCES: the client's mode allowed no reading.
      if (code === "ELOOP" || code === "ENXIO" || code === "EACCES") {
        let reason = `cannot be opened (${code})`;
        try {
          reason = whyNot(fs.lstatSync(at(dirFd, name))) ?? reason;
        } catch {
          /* keep the errno */
        }
        return this.skip(v.display, reason);
      }
      throw e;
    }
    try {
      const st = fs.fstatSync(fd);
      const not = whyNot(st);
      if (not) return this.skip(v.display, not);
      this.vault.admit({ fd, v, size: st.size, src: at(dirFd, name), mode: st.mode, uncounted: st.size, synced: this.synced, via: "rsync" });
      this.result.published++;
    } catch (e) {
      if (!(e instanceof VbError)) throw e;
      if (e.code !== "EXISTS") return this.skip(v.display, e.message, true, e.message, e.audit);
      if (sameAsStored(this.vault, v, fd)) return this.skip(v.display, "exists, identical", true, null);
      this.skip(v.display, "exists", true, "append-only: the name already exists with other contents");
    } finally {
      closeQuietly(fd);
    }
  }
}

/**
 * Does the staged file (fd) hold the same bytes as the stored one at v? Asked only where the key may
 * read v (openRead refuses otherwise): the answer must not tell a key what it could not read.
 */
function sameAsStored(vault: Vault, v: VPath, fd: number): boolean {
  let live: { fd: number; st: fs.Stats };
  try {
    live = vault.openRead(v);
  } catch {
    return false;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (live.st.size !== size) return false;
    const a = Buffer.allocUnsafe(1 << 20);
    const b = Buffer.allocUnsafe(1 << 20);
    for (let pos = 0; pos < size; ) {
      const n = fs.readSync(fd, a, 0, a.length, pos);
      if (n === 0 || fs.readSync(live.fd, b, 0, n, pos) !== n || a.compare(b, 0, n, 0, n) !== 0) return false;
      pos += n;
    }
    return true;
  } finally {
    closeQuietly(live.fd);
  }
}

/** Publish everything below `top` (a staging tree whose layout mirrors the root) into the live tree. */
export function publishStaging(vault: Vault, top: string): PublishResult {
  // A file must be on disk before its name appears. One syncfs(2) for the whole tree costs what a
  // single fsync does; an fsync per file would make a push of many small files crawl.
  const p = new Publisher(vault, syncFs(top));
  const fd = fs.openSync(top, DIR_FLAGS);
  try {
    p.walk(fd, []);
  } finally {
    closeQuietly(fd);
    // And the new names, once, at the end (state and root share the filesystem).
    if (p.result.published) syncFs(top);
  }
  return p.result;
}

/** syncfs(2) of the filesystem holding `p`, through coreutils (Node has no binding). */
function syncFs(p: string): boolean {
  const r = spawnSync(SYNC, ["--file-system", "--", p], { env: { PATH: "/usr/bin:/bin" }, stdio: "ignore", timeout: 600_000 });
  return r.status === 0;
}
