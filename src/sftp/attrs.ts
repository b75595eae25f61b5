// SFTP v3 ATTRS: decoding what clients ask to set, encoding what we report, and the `ls -l` style
// long name of NAME replies.
import type fs from "node:fs";
import { FXP, Reader, Writer, malformed } from "./wire.js";

export const ATTR = { SIZE: 0x1, UIDGID: 0x2, PERMISSIONS: 0x4, ACMODTIME: 0x8, EXTENDED: 0x80000000 } as const;
const KNOWN = (ATTR.SIZE | ATTR.UIDGID | ATTR.PERMISSIONS | ATTR.ACMODTIME | ATTR.EXTENDED) >>> 0;

export interface Attrs {
  size?: number;
  uid?: number;
  gid?: number;
  perm?: number;
  atime?: number;
  mtime?: number;
  /** Names of extended attributes sent (we store none; a request carrying any is refused). */
  extended?: string[];
}

export function readAttrs(r: Reader): Attrs {
  const flags = r.u32("attribute flags");
  if ((flags & ~KNOWN) >>> 0) throw malformed(`unknown attribute flags 0x${((flags & ~KNOWN) >>> 0).toString(16)}`);
  const a: Attrs = {};
  if (flags & ATTR.SIZE) a.size = r.u64("size");
  if (flags & ATTR.UIDGID) {
    a.uid = r.u32("uid");
    a.gid = r.u32("gid");
  }
  if (flags & ATTR.PERMISSIONS) a.perm = r.u32("permissions");
  if (flags & ATTR.ACMODTIME) {
    a.atime = r.u32("atime");
    a.mtime = r.u32("mtime");
  }
  if (flags & ATTR.EXTENDED) {
    const n = r.u32("extended count");
    a.extended = [];
    for (let i = 0; i < n; i++) {
      a.extended.push(r.bytes("extended type").toString("latin1").slice(0, 64));
      r.bytes("extended data");
    }
  }
  return a;
}

export function writeAttrs(w: Writer, a: Attrs): Writer {
  const flags =
    (a.size !== undefined ? ATTR.SIZE : 0) |
    (a.uid !== undefined ? ATTR.UIDGID : 0) |
    (a.perm !== undefined ? ATTR.PERMISSIONS : 0) |
    (a.mtime !== undefined ? ATTR.ACMODTIME : 0);
  w.u32(flags);
  if (a.size !== undefined) w.u64(a.size);
  if (a.uid !== undefined) w.u32(a.uid).u32(a.gid ?? 0);
  if (a.perm !== undefined) w.u32(a.perm);
  if (a.mtime !== undefined) w.u32(a.atime ?? a.mtime).u32(a.mtime);
  return w;
}

const u32time = (ms: number) => Math.min(0xffffffff, Math.max(0, Math.floor(ms / 1000)));

export function fromStats(st: fs.Stats): Attrs {
  return { size: st.size, uid: st.uid, gid: st.gid, perm: st.mode, atime: u32time(st.atimeMs), mtime: u32time(st.mtimeMs) };
}

export function attrsPacket(id: number, a: Attrs): Buffer {
  return writeAttrs(new Writer(FXP.ATTRS, 48).u32(id), a).finish();
}

export interface NameEntry {
  name: string;
  longname: string;
  attrs: Attrs;
}

export function namePacket(id: number, entries: readonly NameEntry[]): Buffer {
  const w = new Writer(FXP.NAME, 64 + entries.length * 128).u32(id).u32(entries.length);
  for (const e of entries) writeAttrs(w.str(e.name).str(e.longname), e.attrs);
  return w.finish();
}

const TYPE_CHAR: ReadonlyArray<[number, string]> = [
  [0o040000, "d"],
  [0o120000, "l"],
  [0o100000, "-"],
  [0o020000, "c"],
  [0o060000, "b"],
  [0o010000, "p"],
  [0o140000, "s"],
];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function modeString(mode: number): string {
  const type = TYPE_CHAR.find(([bits]) => (mode & 0o170000) === bits)?.[1] ?? "?";
  const rwx = (shift: number, special: number, ch: string) => {
    const r = mode & (4 << shift) ? "r" : "-";
    const w = mode & (2 << shift) ? "w" : "-";
    const x = mode & (1 << shift);
    const s = mode & special;
    return r + w + (s ? (x ? ch : ch.toUpperCase()) : x ? "x" : "-");
  };
  return type + rwx(6, 0o4000, "s") + rwx(3, 0o2000, "s") + rwx(0, 0o1000, "t");
}

/** `ls -l` style, as clients that do not format attributes themselves print it. */
export function longname(name: string, st: fs.Stats, now = Date.now()): string {
  const d = new Date(st.mtimeMs);
  const recent = Math.abs(now - st.mtimeMs) < 182 * 24 * 3600 * 1000;
  const day = String(d.getDate()).padStart(2);
  const when = recent
    ? `${MONTHS[d.getMonth()]} ${day} ${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`
    : `${MONTHS[d.getMonth()]} ${day}  ${d.getFullYear()}`;
  return `${modeString(st.mode)} ${String(st.nlink).padStart(3)} ${String(st.uid).padEnd(8)} ${String(st.gid).padEnd(8)} ${String(st.size).padStart(8)} ${when} ${name}`;
}
