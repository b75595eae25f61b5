// Requests on files: OPEN, CLOSE, READ, WRITE, FSTAT, FSETSTAT. Writing always goes through a
// vault upload (a temporary file in `state`, published by link(2) at CLOSE), so a name never
// shows a partial file and an existing name is never opened for writing.
import fs from "node:fs";
import { VbError, existsError } from "../errors.js";
import { PF, DATA_HEADER, MAX_DATA, dataPacket, eofPacket, malformed, okPacket as ok } from "./wire.js";
import { readAttrs, fromStats, attrsPacket, type Attrs } from "./attrs.js";
import { release, handleReply, handleOnly, handleSubject, type Handle } from "./handles.js";
import { inside } from "./place.js";
import { setUploadAttrs, setPathAttrs } from "./setstat.js";
import { op } from "./op.js";
import type { Access } from "../gate/access.js";
import type { SftpContext } from "./context.js";

const WRITE_FLAGS = PF.WRITE | PF.APPEND | PF.CREAT | PF.TRUNC | PF.EXCL;
const KNOWN_FLAGS = PF.READ | WRITE_FLAGS;

// Any write-class flag makes an OPEN a write, even without WRITE itself: READ|CREAT would create
// an empty file (CVE-2017-15906 was exactly that in OpenSSH's read-only mode).
const openAccess = (pflags: number): Access => (pflags & WRITE_FLAGS ? "write" : "pull");

function openWrite(s: SftpContext, path: string, pflags: number, attrs: Attrs): Handle {
  const v = inside(s.vault, path);
  if (!(pflags & PF.CREAT)) {
    // Without CREAT the client wants an existing file, and nothing existing is ever written to.
    if (s.vault.exists(v)) throw existsError(v.display);
    throw new VbError("NOT_FOUND", `'${v.display}': no such file`);
  }
  const up = s.vault.create(v, attrs.perm);
  return { kind: "upload", v, up, append: (pflags & PF.APPEND) !== 0 };
}

function openRead(s: SftpContext, path: string): Handle {
  const v = inside(s.vault, path);
  const { fd, st } = s.vault.openRead(v);
  // Logged before any byte is served: a log that cannot take the line ends the session here.
  s.session.audit.event("read", { path: v.display, size: st.size });
  return { kind: "file", v, fd };
}


export const FILE_OPS = {
  open: op({
    name: "open",
    decode: (r) => ({ path: r.text("filename"), pflags: r.u32("pflags"), attrs: readAttrs(r) }),
    access: (a) => openAccess(a.pflags),
    subject: (a) => a.path,
    run(s, id, a) {
      if (a.pflags & ~KNOWN_FLAGS) throw malformed(`unknown open flags 0x${(a.pflags & ~KNOWN_FLAGS).toString(16)}`);
      if (!(a.pflags & KNOWN_FLAGS)) throw malformed("OPEN needs READ or WRITE");
      const h = a.pflags & WRITE_FLAGS ? openWrite(s, a.path, a.pflags, a.attrs) : openRead(s, a.path);
      return handleReply(s.handles, id, h);
    },
  }),

  close: op({
    name: "close",
    subject: handleSubject,
    decode: handleOnly,
    access: "look",
    run(s, id, a) {
      const h = s.handles.take(a.handle);
      // Publishes (or throws: the name appeared meanwhile); a plain new name may be answered while
      // its fsync and link finish (Vault.admitLater), and the requests that could see it wait.
      if (h.kind === "upload") void h.up.commitLater();
      else release(h);
      return ok(id);
    },
  }),

  read: op({
    name: "read",
    subject: handleSubject,
    decode: (r) => ({ handle: r.bytes("handle"), offset: r.u64("offset"), length: r.u32("length") }),
    access: "look", // the handle was opened for reading: the gate judged that at OPEN
    run(s, id, a) {
      const h = s.handles.of(a.handle, ["file", "upload"], "read");
      const len = Math.min(a.length, MAX_DATA);
      const buf = s.replies.take();
      const fd = h.kind === "file" ? h.fd : h.up.fd;
      let n = 0;
      try {
        n = len === 0 ? 0 : fs.readSync(fd, buf, DATA_HEADER, len, a.offset);
      } finally {
        if (n === 0) s.replies.release(buf);
      }
      if (n === 0) return eofPacket(id);
      s.session.counters.bytesOut += n;
      return dataPacket(buf, id, n);
    },
  }),

  write: op({
    name: "write",
    subject: handleSubject,
    decode: (r) => ({ handle: r.bytes("handle"), offset: r.u64("offset"), data: r.bytes("data") }),
    access: "write",
    run(s, id, a) {
      const h = s.handles.of(a.handle, ["upload"], "write");
      h.up.write(a.data, h.append ? h.up.size : a.offset);
      return ok(id);
    },
  }),

  fstat: op({
    name: "fstat",
    subject: handleSubject,
    decode: handleOnly,
    access: "look",
    run(s, id, a) {
      const h = s.handles.get(a.handle);
      const st = h.kind === "file" ? fs.fstatSync(h.fd) : h.kind === "upload" ? fs.fstatSync(h.up.fd) : s.vault.lstat(h.v);
      return attrsPacket(id, fromStats(st));
    },
  }),

  fsetstat: op({
    name: "fsetstat",
    subject: handleSubject,
    decode: (r) => ({ handle: r.bytes("handle"), attrs: readAttrs(r) }),
    access: "write",
    run(s, id, a) {
      const h = s.handles.get(a.handle);
      if (h.kind === "upload") setUploadAttrs(h.up, a.attrs);
      else setPathAttrs(s.vault, h.v, a.attrs);
      return ok(id);
    },
  }),
};
