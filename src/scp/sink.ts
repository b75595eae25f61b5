// `scp -t TARGET`: the client uploads. Every file goes through the vault (temporary file, then
// link(2) under its final name), so nothing that exists can be replaced and a transfer cut short
// leaves nothing visible. Refusing one file is a warning (\x01) that the client shows before
// going on with the next; a protocol error is fatal (\x02).
import type fs from "node:fs";
import { VbError } from "../errors.js";
import type { Upload } from "../vault/upload.js";
import { vpath, type VPath } from "../vault/paths.js";
import { parseControl, MAX_LINE, type Control } from "./control.js";
import { readReply, PeerGone } from "./stream.js";
import { Side } from "./side.js";

/** D lines may nest this deep below the target (the vault's own path limit applies as well). */
export const MAX_NESTING = 64;

type Times = { atime: number; mtime: number };
type Entry = Extract<Control, { type: "C" | "D" }>;

export class Sink extends Side {
  private lstatOrNull(v: VPath): fs.Stats | null {
    try {
      return this.vault.lstat(v);
    } catch (e) {
      if (e instanceof VbError && e.code === "NOT_FOUND") return null;
      throw e;
    }
  }

  async run(): Promise<void> {
    const target = this.vault.resolve(this.req.paths[0]!);
    const isDir = this.lstatOrNull(target)?.isDirectory() ?? false;
    if (this.req.targetIsDir && !isDir) throw new VbError("NOT_FOUND", `'${target.display}': not a directory`);
    await this.out.ok();
    await this.level(target, isDir, 0);
  }

  /**
   * Read control lines until E (depth > 0) or the end of input (depth 0). When `into` is a
   * directory each entry lands inside it under its own name; otherwise it lands on `into` itself,
   * whatever name the C line gives: that is where existence must be checked.
   */
  private async level(into: VPath, isDir: boolean, depth: number): Promise<void> {
    let times: Times | undefined;
    for (;;) {
      const line = await this.input.line(MAX_LINE);
      if (line === null) {
        if (depth > 0) throw new PeerGone("BAD_REQUEST", `connection closed inside directory '${into.display}'`);
        return;
      }
      const c = parseControl(line);
      switch (c.type) {
        case "message":
          this.clientError(c.text, c.fatal);
          if (c.fatal) throw new PeerGone("BAD_REQUEST", `the client gave up: ${c.text}`);
          continue;
        case "E":
          if (depth === 0) throw new VbError("BAD_REQUEST", "protocol error: E line without a matching D line");
          return;
        case "T":
          times = { atime: c.atime, mtime: c.mtime };
          await this.out.ok();
          continue;
      }
      const dest = isDir ? vpath([...into.comps, c.name]) : into;
      // A name no scp would send ends the transfer, as OpenSSH's sink does: going on, the entries
      // that follow a refused "D .." would land one level above where the client meant them.
      if (c.badName) throw new VbError("NOT_ALLOWED", `'${c.name}' refused: ${c.badName}; the transfer ends here`);
      if (c.type === "D") await this.directory(c, dest, depth, times);
      else await this.file(c, dest, times);
      times = undefined;
    }
  }

  private async directory(c: Entry, dest: VPath, depth: number, times: Times | undefined): Promise<void> {
    if (!this.req.recursive) throw new VbError("BAD_REQUEST", "protocol error: received a directory without -r");
    if (depth + 1 > MAX_NESTING) throw new VbError("BAD_REQUEST", `protocol error: directories nested deeper than ${MAX_NESTING} levels`);
    let created = false;
    try {
      const st = this.lstatOrNull(dest);
      if (st && !st.isDirectory()) throw new VbError("EXISTS", `append-only: '${dest.display}' exists and is not a directory`);
      if (!st) {
        // Owner rwx always: a directory we cannot write into would block every later backup.
        this.vault.mkdir(dest, c.mode);
        created = true;
      }
    } catch (e) {
      return this.refuse(dest.display, e); // the client skips the whole subtree
    }
    await this.out.ok();
    await this.level(dest, true, depth + 1);
    // Times of a directory it created are the session's to set; an existing one is left alone.
    if (created && times) {
      try {
        this.vault.setAttrs(dest, times);
      } catch (e) {
        return this.refuse(dest.display, e);
      }
    }
    await this.out.ok();
  }

  private async file(c: Entry, dest: VPath, times: Times | undefined): Promise<void> {
    const limit = this.ctx.session.policy.limits.maxFileBytes;
    let up: Upload | undefined;
    try {
      if (c.size > limit) throw new VbError("QUOTA", `'${dest.display}': ${c.size} bytes is more than the limit of ${limit} bytes per file`);
      up = this.vault.create(dest, c.mode); // the vault's mode policy makes it 0600 or 0640
      up.expect(c.size); // the quota and the free-space reserve, for the whole file at once
    } catch (e) {
      up?.abort();
      return this.refuse(dest.display, e); // refused before the data: the client does not send it
    }
    await this.out.ok();
    let failed: unknown;
    let offset = 0;
    const complete = await this.input.pipe(c.size, (piece) => {
      // After a failure the rest is still read (and dropped), to stay in step with the client.
      if (failed === undefined)
        try {
          up.write(piece, offset);
        } catch (e) {
          failed = e;
        }
      offset += piece.length;
    });
    if (!complete) {
      up.abort();
      throw new PeerGone("BAD_REQUEST", `connection closed after ${offset} of ${c.size} bytes of '${dest.display}': nothing stored`);
    }
    let status;
    try {
      status = await readReply(this.input);
    } catch (e) {
      up.abort();
      throw e;
    }
    if (!status.ok) failed ??= new VbError("IO", `not stored: the client could not send it whole (${status.message})`);
    if (failed !== undefined) {
      up.abort();
      return this.refuse(dest.display, failed);
    }
    try {
      if (times) up.setAttrs(times);
      up.commit();
    } catch (e) {
      up.abort();
      return this.refuse(dest.display, e); // lost a race: someone else published the name first
    }
    await this.out.ok();
  }
}
