// `scp -f PATH…`: the client downloads. Files are opened through the vault (no link followed at
// any step) and streamed in chunks, each written only when the previous one has drained.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";
import { vpath, MAX_DEPTH, type VPath } from "../vault/paths.js";
import { closeQuietly } from "../fsat.js";
import { expand, byteOrder } from "./glob.js";
import { Side } from "./side.js";

const CHUNK = 256 * 1024;

export class Source extends Side {
  async run(): Promise<void> {
    if (!(await this.accepted())) return; // the client is not ready to receive
    const rootName = path.basename(this.ctx.session.rootReal) || "root";
    for (const pattern of this.req.paths) {
      let matches: VPath[];
      try {
        matches = expand(this.vault, pattern);
      } catch (e) {
        await this.refuse(pattern, e);
        continue;
      }
      for (const v of matches) await this.send(v, v.comps.at(-1) ?? rootName, 0);
    }
  }

  private async send(v: VPath, name: string, depth: number): Promise<void> {
    let st: fs.Stats;
    try {
      st = this.vault.lstat(v);
      if (st.isSymbolicLink()) throw new VbError("OUTSIDE_ROOT", `'${v.display}': a symbolic link, never followed (skipped)`);
      if (st.isDirectory() && !this.req.recursive) throw new VbError("NOT_ALLOWED", `'${v.display}': a directory (use -r)`);
      if (!st.isDirectory() && !st.isFile()) throw new VbError("NOT_ALLOWED", `'${v.display}': not a regular file`);
      // A newline would end the C line early: the client would read the rest as data.
      if (name.includes("\n")) throw new VbError("BAD_REQUEST", `'${v.display}': a name with a newline cannot be sent by scp`);
    } catch (e) {
      return this.refuse(v.display, e);
    }
    if (st.isDirectory()) return this.directory(v, name, st, depth);
    return this.file(v, name);
  }

  private times(st: fs.Stats): string {
    return `T${Math.floor(st.mtimeMs / 1000)} 0 ${Math.floor(st.atimeMs / 1000)} 0\n`;
  }

  private header(kind: "C" | "D", st: fs.Stats, size: number, name: string): string {
    return `${kind}${(st.mode & 0o777).toString(8).padStart(4, "0")} ${size} ${name}\n`;
  }

  private async directory(v: VPath, name: string, st: fs.Stats, depth: number): Promise<void> {
    if (depth >= MAX_DEPTH) return this.refuse(v.display, new VbError("QUOTA", `'${v.display}': deeper than ${MAX_DEPTH} levels (skipped)`));
    const names: string[] = [];
    try {
      for (const batch of this.vault.list(v)) for (const e of batch) names.push(e.name);
    } catch (e) {
      return this.refuse(v.display, e);
    }
    if (this.req.preserve) {
      await this.out.write(this.times(st));
      if (!(await this.accepted())) return;
    }
    await this.out.write(this.header("D", st, 0, name));
    if (!(await this.accepted())) return;
    for (const n of names.sort(byteOrder)) await this.send(vpath([...v.comps, n]), n, depth + 1);
    await this.out.write("E\n");
    await this.accepted();
  }

  private async file(v: VPath, name: string): Promise<void> {
    let fd: number;
    let st: fs.Stats;
    try {
      ({ fd, st } = this.vault.openRead(v));
    } catch (e) {
      return this.refuse(v.display, e);
    }
    try {
      // Logged before any byte is sent: a log that cannot take the line ends the session here.
      this.ctx.session.audit.event("download", { protocol: "scp", path: v.display, size: st.size });
      if (this.req.preserve) {
        await this.out.write(this.times(st));
        if (!(await this.accepted())) return;
      }
      // One write for the whole line: duplicity's paramiko client reads it as one packet.
      await this.out.write(this.header("C", st, st.size, name));
      if (!(await this.accepted())) return;
      let short = false;
      for (let pos = 0; pos < st.size; ) {
        const want = Math.min(CHUNK, st.size - pos);
        const buf = Buffer.alloc(want); // fresh each time: the previous one may still be queued
        // The size is promised in the C line: if the file shrank, the rest stays zeros and the
        // status byte says so.
        for (let got = 0, n = 1; got < want && n > 0 && !short; got += n) {
          n = fs.readSync(fd, buf, got, want - got, pos + got);
          if (n === 0) short = true;
        }
        await this.out.write(buf);
        pos += want;
      }
      this.ctx.session.counters.bytesOut += st.size;
      if (short) return this.refuse(v.display, new VbError("IO", `'${v.display}': file shrank while it was being read`));
      await this.out.ok();
      await this.accepted();
    } finally {
      closeQuietly(fd);
    }
  }
}
