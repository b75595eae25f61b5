// The SFTP request table and its dispatcher. Each request type has one entry: how to decode it,
// what kind of access it is (so read-only mode and `pull: false` are one check, in gate()), and
// its handler. Handlers are synchronous, so replies leave strictly in request order.
import fs from "node:fs";
import { VbError, fromErrno, type Code, type AuditFields } from "../errors.js";
import type { Policy } from "../config/schema.js";
import type { Session } from "../session.js";
import type { Vault } from "../vault/vault.js";
import { FXP, FX, PF, DATA_HEADER, MAX_DATA, Reader, statusPacket, versionPacket } from "./wire.js";
import { Handles } from "./handles.js";
import { BufferPool } from "./pool.js";
import { FILE_OPS } from "./files.js";
import { NAME_OPS } from "./names.js";
import { DIR_OPS } from "./dirs.js";
import { EXTENSIONS, advertised } from "./extensions.js";
import type { AnyOp, Reply } from "./op.js";
import { demand, type Access } from "../gate/access.js";
import type { SftpContext } from "./context.js";

const REQUESTS: Readonly<Partial<Record<number, AnyOp>>> = {
  [FXP.OPEN]: FILE_OPS.open,
  [FXP.CLOSE]: FILE_OPS.close,
  [FXP.READ]: FILE_OPS.read,
  [FXP.WRITE]: FILE_OPS.write,
  [FXP.FSTAT]: FILE_OPS.fstat,
  [FXP.FSETSTAT]: FILE_OPS.fsetstat,
  [FXP.OPENDIR]: DIR_OPS.opendir,
  [FXP.READDIR]: DIR_OPS.readdir,
  [FXP.LSTAT]: NAME_OPS.lstat,
  [FXP.STAT]: NAME_OPS.stat,
  [FXP.SETSTAT]: NAME_OPS.setstat,
  [FXP.REMOVE]: NAME_OPS.remove,
  [FXP.MKDIR]: NAME_OPS.mkdir,
  [FXP.RMDIR]: NAME_OPS.rmdir,
  [FXP.REALPATH]: NAME_OPS.realpath,
  [FXP.RENAME]: NAME_OPS.rename,
  [FXP.READLINK]: NAME_OPS.readlink,
  [FXP.SYMLINK]: NAME_OPS.symlink,
};

/**
 * While uploads answered early are still on their way to their names (Vault.admitLater), only the
 * requests that cannot see those names go on: the next file's OPEN for writing, its WRITEs, and a
 * CLOSE that may itself be answered early. Everything else (a STAT, a listing, a RENAME, a READ,
 * another CLOSE) waits, so the client never sees the tree behind its own answers.
 */
const OVERLAPS: Readonly<Partial<Record<number, (r: Reader, s: Sftp) => boolean>>> = {
  [FXP.WRITE]: () => true,
  [FXP.OPEN]: (r) => {
    r.text("filename");
    const pflags = r.u32("pflags");
    return (pflags & PF.CREAT) !== 0 && (pflags & PF.READ) === 0;
  },
  [FXP.CLOSE]: (r, s) => {
    const h = s.handles.peek(r.bytes("handle"));
    return h?.kind === "upload" && s.vault.mayAdmitLater(h.v);
  },
};

/** What a refusal by the access rule (gate/access.ts) says, per class of request. */
const REFUSED: Record<Access, string> = { look: "looking", pull: "reading files", write: "this key cannot create or change anything" };

// Our codes -> SFTP status. EXISTS is FAILURE, as OpenSSH answers EEXIST: clients that mkdir
// every component of a path take it as "already there" and go on.
const STATUS_OF: Record<Code, number> = {
  EXISTS: FX.FAILURE,
  IMMUTABLE: FX.PERMISSION_DENIED,
  OUTSIDE_ROOT: FX.PERMISSION_DENIED,
  READ_ONLY: FX.PERMISSION_DENIED,
  NOT_ALLOWED: FX.PERMISSION_DENIED,
  QUOTA: FX.FAILURE,
  BAD_REQUEST: FX.BAD_MESSAGE,
  NOT_FOUND: FX.NO_SUCH_FILE,
  IO: FX.FAILURE,
};

// Failures that answer a question rather than refuse anything: clients stat names to learn whether
// they exist, and create each directory of a path to make sure it does. Not audited, not counted.
const ANSWERS = new Set(["*:NOT_FOUND", "mkdir:EXISTS"]);
const isAnswer = (op: string, code: Code) => ANSWERS.has(`*:${code}`) || ANSWERS.has(`${op}:${code}`);

const notFound = (e: unknown) => (e instanceof VbError ? e.code : fromErrno(e, "").code) === "NOT_FOUND";

export function protocolError(message: string): VbError {
  return new VbError("BAD_REQUEST", `sftp protocol error: ${message}`);
}

export class Sftp implements SftpContext {
  readonly handles: Handles;
  /** Buffers of DATA replies, back in the pool once written: a few, as the output queue is bounded. */
  readonly replies = new BufferPool(DATA_HEADER + MAX_DATA, 16);
  private ready = false;
  private trailingNoted = false;
  /** The id of the request being handled: the one a session that must end at once still answers. */
  private current: number | undefined;

  constructor(
    readonly session: Session,
    readonly vault: Vault,
  ) {
    this.handles = new Handles(session.policy.limits.maxOpenHandles);
    session.lastWords = (message) => {
      if (this.current === undefined) return;
      try {
        fs.writeSync(1, statusPacket(this.current, FX.FAILURE, message));
      } catch {
        /* the client is not reading: stderr has it */
      }
    };
  }

  /** Must this packet wait before it is handled? The promise to wait for, if so (see OVERLAPS). */
  hold(pkt: Buffer): Promise<void> | undefined {
    if (!this.vault.publishing) return undefined;
    try {
      if (pkt.length >= 5 && OVERLAPS[pkt[0]!]?.(new Reader(pkt, 5), this)) return undefined;
    } catch {
      /* malformed: it waits, and its handler says what is wrong */
    }
    return this.vault.pendingPublishes();
  }

  /** One packet in (from its type byte on), its reply out. Throws only for protocol errors. */
  handle(pkt: Buffer): Reply {
    const type = pkt[0]!;
    if (!this.ready) {
      if (type !== FXP.INIT) throw protocolError(`the first packet must be INIT, not type ${type}`);
      if (pkt.length < 5) throw protocolError("INIT without a version");
      this.ready = true;
      return versionPacket(advertised());
    }
    if (type === FXP.INIT) throw protocolError("INIT sent twice");
    if (pkt.length < 5) throw protocolError(`a packet of type ${type} too short to carry a request id`);
    const id = pkt.readUInt32BE(1);
    this.current = id;
    const r = new Reader(pkt, 5);
    let entry = REQUESTS[type];
    if (type === FXP.EXTENDED) {
      let name: string;
      try {
        name = r.text("extension name");
      } catch (e) {
        return this.failed(id, "extended", undefined, e);
      }
      entry = Object.hasOwn(EXTENSIONS, name) ? EXTENSIONS[name]!.op : undefined;
      if (!entry) return this.unsupported(id, `extension '${name.slice(0, 100)}'`);
    }
    if (!entry) return this.unsupported(id, `request type ${type}`);
    let subject: string | undefined;
    try {
      const args = entry.decode(r);
      if (r.left() > 0) this.trailing(entry.name, r.left());
      subject = entry.subject?.(args, this);
      const access = typeof entry.access === "function" ? entry.access(args) : entry.access;
      demand(this.session.policy, access, REFUSED[access]);
      try {
        return entry.run(this, id, args);
      } catch (e) {
        // A name another session has answered for is there for the client: wait for its link, once.
        if (subject === undefined || !notFound(e) || !this.vault.awaitClaim(subject)) throw e;
        return entry.run(this, id, args);
      }
    } catch (e) {
      return this.failed(id, entry.name, subject, e);
    }
  }

  /**
   * Bytes after a request's last field are dropped, as OpenSSH's sftp-server drops them: what the
   * declared lengths delimit is the whole request. Noted once per session, not per packet (rclone
   * sends them with every file's last WRITE).
   */
  private trailing(op: string, bytes: number): void {
    if (this.trailingNoted) return;
    this.trailingNoted = true;
    this.session.audit.event("trailing-bytes", { op, bytes, reason: "bytes after a request's last field are ignored (as OpenSSH's sftp-server does); noted once per session" });
  }

  private failed(id: number, op: string, subject: string | undefined, e: unknown): Buffer {
    const err = e instanceof VbError ? e : fromErrno(e, subject ?? op);
    if (!isAnswer(op, err.code)) this.record(op, subject, err.code, err.message, err.audit);
    return statusPacket(id, STATUS_OF[err.code], err.message);
  }

  private unsupported(id: number, what: string): Buffer {
    const message = `${what} is not supported by this server`;
    this.record("unsupported", undefined, "NOT_ALLOWED", message);
    return statusPacket(id, FX.OP_UNSUPPORTED, message);
  }

  record(op: string, subject: string | undefined, code: Code, reason: string, fields?: AuditFields): void {
    const { audit, counters } = this.session;
    if (code !== "IO") counters.refused++;
    // A client looping on refused requests must not fill the (append-only) audit log's disk: past
    // the session's budget (audit/budget.ts) they are only counted, and so is what stderr says.
    const logged = code === "IO" ? audit.event("error", { op, path: subject, code, reason }) : audit.event("refused", { ...fields, op, path: subject, code, reason });
    if (logged) process.stderr.write(`validate-backup: sftp ${op}: ${reason}\n`);
  }

  /** End of session: close what the client left open; unfinished uploads are abandoned. */
  close(): void {
    this.handles.releaseAll();
  }
}
