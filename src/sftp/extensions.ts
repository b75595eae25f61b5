// OpenSSH's extensions (PROTOCOL, section 4) that clients use, by name. Those with a version are
// announced in VERSION; the refused ones are listed so that the refusal says why. Any other name
// is answered OP_UNSUPPORTED by the dispatcher.
import fs from "node:fs";
import { VbError } from "../errors.js";
import { FXP, MAX_PACKET, MAX_DATA, Writer, malformed, okPacket as ok } from "./wire.js";
import { handleOnly, handleSubject } from "./handles.js";
import { inside, place } from "./place.js";
import { realpathReply, renameOwn } from "./names.js";
import { op, type AnyOp } from "./op.js";
import { at, closeQuietly } from "../fsat.js";
import type { VPath } from "../vault/paths.js";
import type { Vault } from "../vault/vault.js";
import type { SftpContext } from "./context.js";

interface Extension {
  /** Announced in VERSION with this version string; absent: known, never announced. */
  readonly version?: string;
  readonly op: AnyOp;
}


const ST_RDONLY = 0x1;
const ST_NOSUID = 0x2;
const NAME_MAX = 255;

// The key's own figures, not the disk's: what it may still add is what its quota and the
// free-space reserve leave (src/vault/quota.ts), and with a quota the size is the quota.
function statvfsReply(s: SftpContext, id: number, statfsPath: string): Buffer {
  const f = fs.statfsSync(statfsPath);
  const flags = ST_NOSUID | (s.vault.readOnly ? ST_RDONLY : 0);
  const quota = s.session.policy.limits.maxStoredBytes;
  const room = s.vault.readOnly ? 0 : Math.floor(s.vault.quota.room(f.bavail * f.bsize) / f.bsize);
  const blocks = quota === undefined ? f.blocks : Math.ceil(quota / f.bsize);
  const w = new Writer(FXP.EXTENDED_REPLY, 100).u32(id);
  for (const n of [f.bsize, f.bsize, blocks, room, room, f.files, f.ffree, f.ffree, 0, flags, NAME_MAX]) w.u64(n);
  return w.finish();
}

/** statvfs of a path below the root: of its directory, opened without following links. */
function statvfsAt(s: SftpContext, id: number, vault: Vault, v: VPath): Buffer {
  const st = vault.lstat(v);
  const fd = vault.openDir(st.isDirectory() ? v.comps : v.comps.slice(0, -1), v.display);
  try {
    return statvfsReply(s, id, at(fd));
  } finally {
    closeQuietly(fd);
  }
}

/** `~` and `~/x` are the root; `~user` names someone else's home, which we do not serve. */
function expandTilde(p: string): string {
  if (p === "~") return ".";
  if (p.startsWith("~/")) return p.slice(2) || ".";
  if (p.startsWith("~")) throw new VbError("OUTSIDE_ROOT", `'${p}': only this key's own home (the backup root) can be named`);
  return p;
}

/** A packed list of uint32 ids, as users-groups-by-id sends them. */
function idCount(b: Buffer, what: string): number {
  if (b.length % 4 !== 0) throw malformed(`${what} is not a list of uint32`);
  if (b.length / 4 > 16384) throw malformed(`${what}: too many ids`);
  return b.length / 4;
}

function refused(name: string, message: string): Extension {
  return {
    op: op({
      name,
      decode: (r) => r.rest(),
      access: "write",
      run() {
        throw new VbError("NOT_ALLOWED", message);
      },
    }),
  };
}

export const EXTENSIONS: Readonly<Record<string, Extension>> = {
  // Announced as OpenSSH does, but no-clobber: onto an existing name it fails like RENAME.
  "posix-rename@openssh.com": {
    version: "1",
    op: op({
      name: "posix-rename",
      decode: (r) => ({ from: r.text("old path"), to: r.text("new path") }),
      access: "write",
      subject: (a) => a.from,
      run(s, id, a) {
        renameOwn(s, a.from, a.to);
        return ok(id);
      },
    }),
  },
  "statvfs@openssh.com": {
    version: "2",
    op: op({
      name: "statvfs",
      decode: (r) => ({ path: r.text("path") }),
      access: "look",
      subject: (a) => a.path,
      run: (s, id, a) => statvfsAt(s, id, s.vault, inside(s.vault, a.path)),
    }),
  },
  "fstatvfs@openssh.com": {
    version: "2",
    op: op({
      name: "fstatvfs",
      decode: handleOnly,
      access: "look",
      subject: handleSubject,
      run(s, id, a) {
        const h = s.handles.get(a.handle);
        if (h.kind === "dir") return statvfsAt(s, id, s.vault, h.v);
        // The magic link of an open descriptor: statfs reaches the file we hold, whatever its name now.
        return statvfsReply(s, id, `/proc/self/fd/${h.kind === "file" ? h.fd : h.up.fd}`);
      },
    }),
  },
  "fsync@openssh.com": {
    version: "1",
    op: op({
      name: "fsync",
      decode: handleOnly,
      access: "look",
      subject: handleSubject,
      run(s, id, a) {
        const h = s.handles.get(a.handle);
        if (h.kind === "upload") fs.fsyncSync(h.up.fd);
        return ok(id);
      },
    }),
  },
  "limits@openssh.com": {
    version: "1",
    op: op({
      name: "limits",
      decode: () => ({}),
      access: "look",
      run: (s, id) =>
        new Writer(FXP.EXTENDED_REPLY, 48).u32(id).u64(MAX_PACKET).u64(MAX_DATA).u64(MAX_DATA).u64(s.session.policy.limits.maxOpenHandles).finish(),
    }),
  },
  "expand-path@openssh.com": {
    version: "1",
    op: op({
      name: "expand-path",
      decode: (r) => ({ path: r.text("path") }),
      access: "look",
      subject: (a) => a.path,
      run: (s, id, a) => realpathReply(s, id, place(s.vault, expandTilde(a.path))),
    }),
  },
  "home-directory": {
    version: "1",
    op: op({
      name: "home-directory",
      decode: (r) => ({ user: r.text("user name") }),
      access: "look",
      run: (s, id) => realpathReply(s, id, place(s.vault, ".")),
    }),
  },
  // Names are not ours to tell: every one comes back empty, which the protocol allows.
  "users-groups-by-id@openssh.com": {
    version: "1",
    op: op({
      name: "users-groups-by-id",
      decode: (r) => ({ uids: idCount(r.bytes("uids"), "uids"), gids: idCount(r.bytes("gids"), "gids") }),
      access: "look",
      run: (_s, id, a) => new Writer(FXP.EXTENDED_REPLY, 16).u32(id).bytes(Buffer.alloc(a.uids * 4)).bytes(Buffer.alloc(a.gids * 4)).finish(),
    }),
  },
  "hardlink@openssh.com": refused("hardlink", "append-only: hard links cannot be made (a link would let a stored file change under another name)"),
  "copy-data": refused("copy-data", "append-only: copy-data is not supported (upload the bytes instead)"),
  "lsetstat@openssh.com": refused("lsetstat", "symbolic links are never created or changed here"),
};

export function advertised(): Array<[string, string]> {
  return Object.entries(EXTENSIONS).flatMap(([name, e]) => (e.version ? [[name, e.version] as [string, string]] : []));
}
