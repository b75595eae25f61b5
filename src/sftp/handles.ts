// Open handles of one SFTP session. A handle string is a 4-byte counter that is never reused, so a
// stale handle from a closed file can never reach a newer one.
import fs from "node:fs";
import { VbError } from "../errors.js";
import { handlePacket, type Reader } from "./wire.js";
import type { VPath } from "../vault/paths.js";
import type { Upload } from "../vault/upload.js";
import type { Entry } from "../vault/vault.js";

export type Handle =
  | { kind: "file"; v: VPath; fd: number }
  | { kind: "upload"; v: VPath; up: Upload; append: boolean }
  | { kind: "dir"; v: VPath; batches: Generator<Entry[]>; first: Entry[] | undefined };

export type Kind = Handle["kind"];
type Of<K extends Kind> = Extract<Handle, { kind: K }>;

const WHAT: Record<Kind, string> = { file: "a file open for reading", upload: "a file open for writing", dir: "a directory" };

export class Handles {
  private readonly open = new Map<number, Handle>();
  private counter = 0;

  constructor(private readonly max: number) {}

  get size(): number {
    return this.open.size;
  }

  add(h: Handle): Buffer {
    if (this.open.size >= this.max) throw new VbError("QUOTA", `at most ${this.max} handles may be open at once; close some first`);
    if (this.counter >= 0xffffffff) throw new VbError("QUOTA", "this session has opened too many handles");
    const n = ++this.counter;
    this.open.set(n, h);
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(n);
    return b;
  }

  private key(handle: Buffer): number {
    if (handle.length !== 4) throw new VbError("BAD_REQUEST", "invalid handle (not one this server gave out)");
    return handle.readUInt32BE(0);
  }

  get(handle: Buffer): Handle {
    const h = this.open.get(this.key(handle));
    if (!h) throw new VbError("BAD_REQUEST", "invalid handle (already closed or never opened)");
    return h;
  }

  /** The handle if it is open (for messages), never throwing. */
  peek(handle: Buffer): Handle | undefined {
    return handle.length === 4 ? this.open.get(handle.readUInt32BE(0)) : undefined;
  }

  /** The handle, which must be of one of the given kinds. */
  of<K extends Kind>(handle: Buffer, kinds: readonly K[], op: string): Of<K> {
    const h = this.get(handle);
    if (!(kinds as readonly Kind[]).includes(h.kind)) throw new VbError("BAD_REQUEST", `${op}: the handle is ${WHAT[h.kind]}`);
    return h as Of<K>;
  }

  take(handle: Buffer): Handle {
    const h = this.get(handle);
    this.open.delete(this.key(handle));
    return h;
  }

  /** End of session: release everything; unfinished uploads are abandoned, never published. */
  releaseAll(): void {
    for (const h of this.open.values()) release(h);
    this.open.clear();
  }
}

export function release(h: Handle): void {
  try {
    if (h.kind === "file") fs.closeSync(h.fd);
    else if (h.kind === "upload") h.up.abort();
    else h.batches.return(undefined);
  } catch {
    /* already released */
  }
}

/** Decoder and audit subject of the requests whose only field is a handle. */
export const handleOnly = (r: Reader) => ({ handle: r.bytes("handle") });
export const handleSubject = (a: { handle: Buffer }, s: { handles: Handles }) => s.handles.peek(a.handle)?.v.display;

/** Register h and answer with its handle; h is released if it cannot be registered. */
export function handleReply(handles: Handles, id: number, h: Handle): Buffer {
  try {
    return handlePacket(id, handles.add(h));
  } catch (e) {
    release(h);
    throw e;
  }
}
