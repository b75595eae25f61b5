// Requests on names: REALPATH, STAT, LSTAT, SETSTAT, MKDIR, REMOVE, RMDIR, RENAME, READLINK,
// SYMLINK. Removing and renaming are the vault's business (only regular files this session
// published, never onto an existing name); links are never made, read or followed.
import { VbError } from "../errors.js";
import { okPacket as ok, type Reader } from "./wire.js";
import { readAttrs, fromStats, attrsPacket, namePacket, type Attrs } from "./attrs.js";
import { place, inside, absolute, ANCESTOR_ATTRS, type Place } from "./place.js";
import { setPathAttrs } from "./setstat.js";
import { op } from "./op.js";
import type { SftpContext } from "./context.js";

function isDirectory(s: SftpContext, pl: Place): boolean {
  try {
    return pl.v !== undefined && s.vault.lstat(pl.v).isDirectory();
  } catch {
    return false;
  }
}

const pathOnly = (r: Reader) => ({ path: r.text("path") });
const bySubject = (a: { path: string }) => a.path;

/** NAME reply with one absolute path, as REALPATH answers. */
export function realpathReply(s: SftpContext, id: number, pl: Place): Buffer {
  const abs = absolute(s.vault, pl);
  return namePacket(id, [{ name: abs, longname: abs, attrs: {} }]);
}

function statOf(s: SftpContext, path: string, follow: boolean): Attrs {
  const pl = place(s.vault, path);
  if (pl.above !== undefined) return ANCESTOR_ATTRS;
  const st = s.vault.lstat(pl.v);
  if (follow && st.isSymbolicLink()) throw new VbError("OUTSIDE_ROOT", `'${pl.v.display}' is a symbolic link, which is never followed`);
  return fromStats(st);
}

export function renameOwn(s: SftpContext, from: string, to: string): void {
  s.vault.renameOwn(inside(s.vault, from), inside(s.vault, to));
}

const twoPaths = (r: Reader) => ({ from: r.text("old path"), to: r.text("new path") });

export const NAME_OPS = {
  realpath: op({
    name: "realpath",
    decode: pathOnly,
    access: "look",
    subject: bySubject,
    run: (s, id, a) => realpathReply(s, id, place(s.vault, a.path)),
  }),

  stat: op({
    name: "stat",
    decode: pathOnly,
    access: "look",
    subject: bySubject,
    run: (s, id, a) => attrsPacket(id, statOf(s, a.path, true)),
  }),

  lstat: op({
    name: "lstat",
    decode: pathOnly,
    access: "look",
    subject: bySubject,
    run: (s, id, a) => attrsPacket(id, statOf(s, a.path, false)),
  }),

  setstat: op({
    name: "setstat",
    decode: (r) => ({ path: r.text("path"), attrs: readAttrs(r) }),
    access: "write",
    subject: bySubject,
    run(s, id, a) {
      setPathAttrs(s.vault, inside(s.vault, a.path), a.attrs);
      return ok(id);
    },
  }),

  mkdir: op({
    name: "mkdir",
    decode: (r) => ({ path: r.text("path"), attrs: readAttrs(r) }),
    access: "write",
    subject: bySubject,
    run(s, id, a) {
      const pl = place(s.vault, a.path);
      // The root and its ancestors exist: a plain failure, so clients creating each component go on.
      if (pl.above !== undefined || pl.v.comps.length === 0) throw new VbError("EXISTS", `'${absolute(s.vault, pl)}' already exists`);
      try {
        s.vault.mkdir(pl.v, a.attrs.perm);
      } catch (e) {
        // An existing directory answers a client's `mkdir -p` and is not worth a line; a file or a
        // planted link under that name is: audit it, then answer as OpenSSH does (EEXIST).
        if (e instanceof VbError && e.code === "EXISTS" && !isDirectory(s, pl)) s.record("mkdir", a.path, e.code, e.message);
        throw e;
      }
      return ok(id);
    },
  }),

  remove: op({
    name: "remove",
    decode: pathOnly,
    access: "write",
    subject: bySubject,
    run(s, id, a) {
      s.vault.remove(inside(s.vault, a.path));
      return ok(id);
    },
  }),

  rmdir: op({
    name: "rmdir",
    decode: pathOnly,
    access: "write",
    subject: bySubject,
    run(s, _id, a) {
      throw new VbError("IMMUTABLE", `append-only: '${a.path}': directories cannot be removed`);
    },
  }),

  // SSH_FXP_RENAME fails if the target exists (draft-02, 6.5): exactly what the vault does.
  rename: op({
    name: "rename",
    decode: twoPaths,
    access: "write",
    subject: (a) => a.from,
    run(s, id, a) {
      renameOwn(s, a.from, a.to);
      return ok(id);
    },
  }),

  readlink: op({
    name: "readlink",
    decode: pathOnly,
    access: "look",
    subject: bySubject,
    run(s, _id, a) {
      throw new VbError("NOT_ALLOWED", `'${a.path}': symbolic links are never read or followed here`);
    },
  }),

  // OpenSSH sends (target, link), the reverse of the draft; either way nothing is created.
  symlink: op({
    name: "symlink",
    decode: twoPaths,
    access: "write",
    subject: (a) => a.to,
    run(s, _id, a) {
      throw new VbError("NOT_ALLOWED", `append-only: symbolic links cannot be created ('${a.to}' -> '${a.from}')`);
    },
  }),
};
