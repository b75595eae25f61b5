// A small OpenPGP packet-header reader of our own (RFC 9580 section 4), enough to tell from the
// first KiBs of a file (and the last, for a big armored one) what it is: an encrypted message (session-key packets, then encrypted
// data), a detached signature, or anything else. It never decrypts and never loads openpgp, so the
// upload guard costs a few microseconds per file. Binary and ASCII-armored input are both read.

/** How much of a file the guard looks at: room for dozens of recipients, armored. */
export const HEAD_BYTES = 64 * 1024;
/** A file of detached signatures only is read whole: a few hundred bytes per signer. */
export const MAX_SIGNATURE_BYTES = 64 * 1024;
/** How much of the end of a big armored file is read (see walkArmored). */
export const TAIL_BYTES = 4 * 1024;

/** `n` bytes of the file being classified from offset `pos` (fewer at its end). */
export type Reader = (pos: number, n: number) => Buffer;

export interface KeyRef {
  /** 16 lower-case hex digits; null for a session-key packet version we cannot read. */
  keyId: string | null;
  /** Present when the packet names the key by fingerprint (version 6 packets). */
  fingerprint?: string;
  /** gpg --throw-keyids (or a v6 packet without a key): the recipient is deliberately hidden. */
  anonymous: boolean;
}

export type Shape =
  | { kind: "encrypted"; armored: boolean; recipients: KeyRef[]; passwords: number; data: string }
  | { kind: "signature"; armored: boolean; count: number }
  | { kind: "other"; armored: boolean; why: string };

const TAG_NAMES: Record<number, string> = {
  1: "public-key session key",
  2: "signature",
  3: "symmetric-key session key",
  4: "one-pass signature",
  5: "secret key",
  6: "public key",
  7: "secret subkey",
  8: "compressed data",
  9: "symmetrically encrypted data",
  10: "marker",
  11: "literal data",
  12: "trust",
  13: "user id",
  14: "public subkey",
  17: "user attribute",
  18: "integrity-protected encrypted data",
  19: "modification detection code",
  20: "AEAD encrypted data",
  21: "padding",
};

// What each packet means at the top level of a file. Anything absent carries readable content
// (literal or compressed data, keys, one-pass signatures) or is unknown: the file is not encrypted.
type Role = "pkesk" | "skesk" | "data" | "marker" | "padding" | "signature";
const ROLE: Record<number, Role> = { 1: "pkesk", 3: "skesk", 9: "data", 18: "data", 20: "data", 10: "marker", 21: "padding", 2: "signature" };

// Encrypted-data packets, by tag, and the versions of their first body octet (RFC 9580 5.13.1; tag 20
// is LibrePGP's OCB packet, which gpg 2.3+ writes for keys that ask for AEAD). Symmetrically
// encrypted data (tag 9) is absent on purpose: it has no version octet to check, carries no
// integrity protection (gpg 2.2.8+ fails its decryption unless told --ignore-mdc-error, so a
// restore would fail), and only gpg --rfc2440 still writes it: gpg 2.2 and duplicity write tag 18
// version 1.
const DATA_VERSIONS: Record<number, readonly number[]> = { 18: [1, 2], 20: [1] };

function tagName(tag: number): string {
  return TAG_NAMES[tag] ?? `unknown (tag ${tag})`;
}

export interface Header {
  tag: number;
  /** Octets of the header itself. */
  size: number;
  /** Body length; "partial" (more chunks follow) or "rest" (old-format indeterminate) for streams. */
  length: number | "partial" | "rest";
}

function bigEndian(buf: Uint8Array, pos: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) v = v * 256 + buf[pos + i]!;
  return v;
}

/** One packet header at `pos`, null if `buf` ends inside it, or a string saying why it is not one. */
export function readHeader(buf: Uint8Array, pos: number): Header | null | string {
  const first = buf[pos];
  if (first === undefined) return null;
  if ((first & 0x80) === 0) return `byte 0x${first.toString(16).padStart(2, "0")} at offset ${pos} is not an OpenPGP packet header`;
  const need = (n: number) => pos + n <= buf.length;
  if ((first & 0x40) === 0) {
    // Old format: tag in bits 5-2, length type in bits 1-0.
    const tag = (first >> 2) & 0x0f;
    const type = first & 0x03;
    if (type === 3) return { tag, size: 1, length: "rest" };
    const n = 1 << type;
    if (!need(1 + n)) return null;
    return { tag, size: 1 + n, length: bigEndian(buf, pos + 1, n) };
  }
  const tag = first & 0x3f;
  if (!need(2)) return null;
  const o1 = buf[pos + 1]!;
  if (o1 < 192) return { tag, size: 2, length: o1 };
  if (o1 < 224) {
    if (!need(3)) return null;
    return { tag, size: 3, length: ((o1 - 192) << 8) + buf[pos + 2]! + 192 };
  }
  if (o1 === 255) {
    if (!need(6)) return null;
    return { tag, size: 6, length: bigEndian(buf, pos + 2, 4) };
  }
  return { tag, size: 2, length: "partial" };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** The recipient named by a public-key session key packet body. */
export function pkeskRecipient(body: Uint8Array): KeyRef {
  const version = body[0];
  if (version === 3 && body.length >= 9) {
    const keyId = hex(body.subarray(1, 9));
    return { keyId, anonymous: /^0+$/.test(keyId) };
  }
  if (version === 6 && body.length >= 2) {
    const n = body[1]!;
    if (n === 0) return { keyId: null, anonymous: true };
    if (body.length < 2 + n || n < 2) return { keyId: null, anonymous: false };
    const keyVersion = body[2]!;
    const fpr = body.subarray(3, 2 + n);
    // A v4 key id is the low 64 bits of its fingerprint, a v6 (and v5) key id the high 64 bits.
    const keyId = keyVersion === 4 ? hex(fpr.subarray(fpr.length - 8)) : hex(fpr.subarray(0, 8));
    return { keyId, fingerprint: hex(fpr), anonymous: false };
  }
  return { keyId: null, anonymous: false };
}

// What a detached signature's packet must hold (RFC 9580 5.2.3): a document signature (binary or
// text), its subpacket areas (lengths of 2 octets in v4, 4 in v6), 2 octets of the hash, in v6 a
// salt of the size the hash algorithm fixes, then exactly the algorithm's signature material.
const AREA_LENGTH_OCTETS: Record<number, number> = { 4: 2, 6: 4 };
const DOCUMENT_SIGNATURES = new Set([0x00, 0x01]);
const SIG_MATERIAL: Record<number, { mpis: number } | { octets: number }> = {
  1: { mpis: 1 }, // RSA
  3: { mpis: 1 }, // RSA sign-only (old keys)
  17: { mpis: 2 }, // DSA
  19: { mpis: 2 }, // ECDSA
  22: { mpis: 2 }, // EdDSALegacy: what gpg 2.2 writes for ed25519 keys
  27: { octets: 64 }, // Ed25519
  28: { octets: 114 }, // Ed448
};
const V6_SALT_OCTETS: Record<number, number> = { 8: 16, 9: 24, 10: 32, 11: 16, 12: 16, 14: 32 };

/** Why a subpacket area `b[start, end)` does not parse (RFC 9580 5.2.3.7), or null. */
function subpacketProblem(b: Uint8Array, start: number, end: number): string | null {
  for (let pos = start; pos < end; ) {
    const o1 = b[pos]!;
    const size = o1 < 192 ? 1 : o1 < 255 ? 2 : 5;
    if (pos + size > end) return `the length of the subpacket at ${pos - start} runs past the area`;
    const length = size === 1 ? o1 : size === 2 ? ((o1 - 192) << 8) + b[pos + 1]! + 192 : bigEndian(b, pos + 1, 4);
    if (length === 0) return `the subpacket at ${pos - start} has length 0 (not even a type octet)`;
    if (pos + size + length > end) return `the subpacket at ${pos - start} (${length} bytes) runs past the area`;
    pos += size + length;
  }
  return null;
}

/** Why a signature packet's body is not a v4 or v6 document signature, or null. */
export function signatureProblem(b: Uint8Array): string | null {
  if (b.length === 0) return "an empty packet";
  const version = b[0]!;
  const areaOctets = AREA_LENGTH_OCTETS[version];
  if (areaOctets === undefined) return `version ${version}; only v4 and v6 signatures are accepted`;
  if (b.length < 4) return "the packet ends inside its first fields";
  const [type, algorithm, hash] = [b[1]!, b[2]!, b[3]!];
  if (!DOCUMENT_SIGNATURES.has(type)) return `signature type 0x${type.toString(16).padStart(2, "0")}; a detached signature is of type 0x00 (binary) or 0x01 (text)`;
  const material = SIG_MATERIAL[algorithm];
  if (!material) return `public-key algorithm ${algorithm} is not one the guard knows`;
  let pos = 4;
  for (const area of ["hashed", "unhashed"]) {
    if (pos + areaOctets > b.length) return `the packet ends inside the ${area} subpacket area's length`;
    const n = bigEndian(b, pos, areaOctets);
    pos += areaOctets;
    if (pos + n > b.length) return `the ${area} subpacket area (${n} bytes) runs past the packet`;
    const bad = subpacketProblem(b, pos, pos + n);
    if (bad) return `${area} subpackets: ${bad}`;
    pos += n;
  }
  pos += 2; // the hash's left 16 bits
  if (version === 6) {
    const salt = V6_SALT_OCTETS[hash];
    if (salt === undefined) return `hash algorithm ${hash} has no salt size for a v6 signature`;
    if (b[pos] !== salt) return `a salt of ${b[pos] ?? "no"} bytes where hash algorithm ${hash} takes ${salt}`;
    pos += 1 + salt;
  }
  if ("octets" in material) pos += material.octets;
  else {
    for (let i = 1; i <= material.mpis; i++) {
      if (pos + 2 > b.length) return `the packet ends inside the length of MPI ${i}`;
      pos += 2 + Math.ceil(bigEndian(b, pos, 2) / 8);
      if (pos > b.length) return `MPI ${i} runs past the packet`;
    }
  }
  if (pos > b.length) return "the packet ends inside its signature material";
  if (pos < b.length) return `${b.length - pos} byte${b.length - pos > 1 ? "s" : ""} after the signature material`;
  return null;
}

/** Why an encrypted-data packet whose body starts at `start` is refused, null if not, "cut" if `buf` ends first. */
function dataProblem(tag: number, h: Header, buf: Uint8Array, start: number): string | null | "cut" {
  const versions = DATA_VERSIONS[tag];
  if (!versions) return `${tagName(tag)} (tag ${tag}): the legacy form without integrity protection, whose decryption gpg fails`;
  // A partial or indeterminate length has at least one octet in its first chunk.
  if (h.length === 0) return `${tagName(tag)} with no version octet`;
  const version = buf[start];
  if (version === undefined) return "cut";
  if (!versions.includes(version)) return `${tagName(tag)} of version ${version} (accepted: ${versions.join(", ")})`;
  return null;
}

const signatureTooBig = (size?: number) => `a detached signature larger than ${MAX_SIGNATURE_BYTES / 1024} KiB${size === undefined ? "" : ` (${size} bytes)`}`;

/** Walk top-level packets of `buf`; `complete` says whether `buf` is the whole file. */
export function walkPackets(buf: Uint8Array, complete: boolean, armored = false): Shape {
  const other = (why: string): Shape => ({ kind: "other", armored, why });
  const recipients: KeyRef[] = [];
  let passwords = 0;
  let signatures = 0;
  let paddingAt = -1;
  const limit = () => (complete ? "the file ends" : signatures ? signatureTooBig() : `nothing decisive in the first ${HEAD_BYTES / 1024} KiB`);
  for (let pos = 0; ; ) {
    if (pos >= buf.length) {
      if (!complete) return other(limit());
      if (signatures > 0 && recipients.length + passwords === 0) {
        // Padding may hold anything, and a detached signature has no use for it.
        if (paddingAt >= 0) return other(`a padding packet in a detached signature at offset ${paddingAt}`);
        return { kind: "signature", armored, count: signatures };
      }
      return other(pos === 0 ? "the file is empty" : "the file ends before any encrypted data");
    }
    const h = readHeader(buf, pos);
    if (h === null) return other(complete ? "the file ends inside a packet header" : limit());
    if (typeof h === "string") return other(pos === 0 ? `not an OpenPGP message (${h})` : h);
    const role = ROLE[h.tag];
    const esks = recipients.length + passwords;
    if (role === undefined) return other(`a ${tagName(h.tag)} packet${esks || signatures ? ` at offset ${pos}` : ""}: readable content, not an encrypted message`);
    if (role === "data") {
      if (signatures) return other(`encrypted data after a signature at offset ${pos}`);
      if (!esks) return other(`${tagName(h.tag)} without any session key packet`);
      const bad = dataProblem(h.tag, h, buf, pos + h.size);
      if (bad === "cut") return other(complete ? `the file ends inside a ${tagName(h.tag)} packet` : limit());
      if (bad) return other(bad);
      return { kind: "encrypted", armored, recipients, passwords, data: tagName(h.tag) };
    }
    // Session keys, signatures, markers and padding are whole packets of a definite length.
    if (typeof h.length !== "number") return other(`a ${tagName(h.tag)} packet with a streamed length`);
    const start = pos + h.size;
    const end = start + h.length;
    if (end > buf.length) return other(complete ? `the file ends inside a ${tagName(h.tag)} packet` : limit());
    if (role === "signature") {
      if (esks) return other(`a signature among session key packets at offset ${pos}`);
      const bad = signatureProblem(buf.subarray(start, end));
      if (bad) return other(`a signature packet at offset ${pos} that is not a detached signature: ${bad}`);
      signatures++;
    } else if (role === "marker" && Buffer.from(buf.subarray(start, end)).toString("latin1") !== "PGP") {
      // RFC 9580 5.8: the body of a marker is exactly these three octets.
      return other(`a marker packet at offset ${pos} that does not hold "PGP"`);
    } else if (role === "padding" && paddingAt < 0) {
      paddingAt = pos;
    } else if (role === "pkesk" || role === "skesk") {
      if (signatures) return other(`a session key packet after a signature at offset ${pos}`);
      if (role === "pkesk") recipients.push(pkeskRecipient(buf.subarray(start, end)));
      else passwords++;
    }
    pos = end;
  }
}

// ASCII armor (RFC 9580 section 6): only these two blocks can hold what the guard accepts.
const ARMOR_BEGIN = /^-----BEGIN PGP (MESSAGE|SIGNATURE)-----[ \t]*$/;
const ARMOR_ANY = /^-----BEGIN PGP ([A-Z ,/0-9]+)-----/;
const BASE64_LINE = /^[A-Za-z0-9+/]*={0,2}$/;
const CHECKSUM_LINE = /^=[A-Za-z0-9+/]{4}$/;
const BLANK = /^[ \t\r\n]*$/;
const AFTER_END = "text after the armor's END line";

/** Whether bytes [pos, size) of the file are all blank, read a head's worth at a time. */
function blankFrom(read: Reader, pos: number, size: number): boolean {
  for (; pos < size; pos += HEAD_BYTES) {
    const chunk = read(pos, Math.min(HEAD_BYTES, size - pos));
    if (chunk.length === 0 || !BLANK.test(chunk.toString("latin1"))) return false;
  }
  return true;
}

/** Why the last lines of a big armored file are not the end of its base64 body and its END line, or null. */
function armorTailProblem(tail: Buffer, endLine: string): string | null {
  const lines = tail.toString("latin1").replace(/[ \t\r\n]+$/, "").split(/\r?\n/);
  const last = lines.pop()!;
  if (last !== endLine) return lines.some((l) => l.trimEnd() === endLine) ? AFTER_END : `the file does not end with the armor's END line (${endLine})`;
  lines.shift(); // read from the middle of a line
  if (CHECKSUM_LINE.test(lines.at(-1)?.trimEnd() ?? "")) lines.pop();
  return lines.every((l) => BASE64_LINE.test(l.trimEnd())) ? null : `a line among the last ${TAIL_BYTES / 1024} KiB of the armor is not base64`;
}

/**
 * Decode the armored block at the start of `head` (as far as it goes) and walk its packets.
 *
 * Nothing but whitespace may follow the END line (gpg would ignore it on restore, and it could be
 * anything). Where the END line is in the head, everything after it is read: a newline in what
 * gpg writes; more blanks cost their sender the same upload they cost us to read. Where it is not
 * (a message of more than 64 KiB), only the last TAIL_BYTES are: they must end with the END line
 * and hold only base64 lines (and the checksum) before it, so no BEGIN, END or text line is there
 * either. The middle of a big file is not read: a file built to hide text there passes, as a
 * binary message carries whatever follows its encrypted-data header. What this catches is text
 * appended to a message, at the cost of one read of 4 KiB.
 */
function walkArmored(head: Buffer, size: number, read: Reader | undefined): Shape {
  const complete = head.length >= size;
  const other = (why: string): Shape => ({ kind: "other", armored: true, why });
  const all = head.toString("latin1").replace(/^\s+/, "").split(/\r?\n/);
  // The last line may be cut in the middle, unless the head is the whole file.
  const lines = complete ? all : all.slice(0, -1);
  const begin = lines[0] ?? "";
  const kind = ARMOR_BEGIN.exec(begin)?.[1];
  if (!kind) return other(`armored '${ARMOR_ANY.exec(begin)?.[1] ?? begin.slice(0, 40)}' block, not an encrypted message`);
  const endLine = `-----END PGP ${kind}-----`;
  let i = 1;
  for (; i < lines.length && lines[i]!.trim() !== ""; i++) {
    if (!/^[\x21-\x39\x3b-\x7e]+: /.test(lines[i]!)) return other(`malformed armor header line ${i + 1}`);
  }
  if (i >= lines.length) return other(complete ? "armor without a body" : `nothing decisive in the first ${HEAD_BYTES / 1024} KiB`);
  let b64 = "";
  let end = -1;
  for (i++; i < lines.length && end < 0; i++) {
    const line = lines[i]!.trimEnd();
    if (line === endLine) end = i;
    else if (CHECKSUM_LINE.test(line)) {
      if (i + 1 < lines.length && lines[i + 1]!.trimEnd() !== endLine) return other(`armor line ${i + 2}: only the END line may follow the checksum`);
    } else if (line.startsWith("-----")) return other(`armor line ${i + 1} is not the END line of the PGP ${kind}`);
    else if (!BASE64_LINE.test(line)) return other(`armor line ${i + 1} is not base64`);
    else b64 += line;
  }
  if (end >= 0) {
    if (!BLANK.test(all.slice(end + 1).join("\n"))) return other(AFTER_END);
    if (!complete && !(read && blankFrom(read, head.length, size))) return other(AFTER_END);
  } else {
    if (complete) return other(`the armor has no END line (${endLine})`);
    const n = Math.min(TAIL_BYTES, size);
    const bad = read ? armorTailProblem(read(size - n, n), endLine) : "the end of the file was not read";
    if (bad) return other(bad);
  }
  const whole = b64.length - (b64.length % 4);
  return walkPackets(Buffer.from(b64.slice(0, whole), "base64"), end >= 0, true);
}

/**
 * What the file starting with `head` is; `size` is the file's full size. `read` reads more of the
 * file, which only an armored file longer than its head needs.
 */
export function classify(head: Buffer, size: number, read?: Reader): Shape {
  const text = head.subarray(0, 64).toString("latin1").trimStart();
  const shape = text.startsWith("-----") ? walkArmored(head, size, read) : walkPackets(head, head.length >= size);
  if (shape.kind === "signature" && size > MAX_SIGNATURE_BYTES) return { kind: "other", armored: shape.armored, why: signatureTooBig(size) };
  return shape;
}

/** One line for people and the audit log. */
export function describe(s: Shape): string {
  const form = s.armored ? "armored " : "";
  if (s.kind === "signature") return `${form}detached signature (${s.count} packet${s.count > 1 ? "s" : ""})`;
  if (s.kind === "other") return s.why;
  const to = s.recipients.map((r) => (r.anonymous ? "anonymous" : (r.keyId ?? "unreadable key id")));
  if (s.passwords) to.push(`${s.passwords} passphrase${s.passwords > 1 ? "s" : ""}`);
  return `${form}encrypted message (${s.data}) to ${to.join(", ")}`;
}
