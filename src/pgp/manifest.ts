// duplicity's manifest (0.7/0.8, manifest.py): a few header lines, then one block per volume,
//
//   Volume 3:
//       StartingPath   a.bin 33
//       EndingPath     b.txt
//       Hash SHA1 7bf0e53ab8bacdfcd15666ffe34e4967cd04b939
//
// then "Filelist N" and the changed paths. The hash is of the volume file as stored (after gpg).
// Fed chunk by chunk: a manifest's file list can be as long as the backup's file count, so nothing
// after "Filelist" is kept.

export interface VolumeHash {
  /** Node's name for the algorithm (sha1), or null when duplicity named one we do not know. */
  algorithm: string | null;
  named: string;
  hex: string;
}

const ALGORITHMS: Record<string, string> = { SHA1: "sha1", MD5: "md5", SHA256: "sha256" };
const MAX_LINE = 64 * 1024;

export class ManifestParser {
  readonly volumes = new Map<number, VolumeHash | null>();
  private current: number | null = null;
  private done = false;
  private partial = "";
  private readonly decoder = new TextDecoder("utf-8");
  /** Volumes listed more than once (a resumed backup). */
  readonly repeated = new Set<number>();

  push(chunk: Uint8Array): void {
    if (this.done) return;
    const text = this.partial + this.decoder.decode(chunk, { stream: true });
    const lines = text.split("\n");
    this.partial = lines.pop() ?? "";
    if (this.partial.length > MAX_LINE) this.partial = this.partial.slice(0, MAX_LINE);
    for (const line of lines) this.line(line);
  }

  finish(): this {
    if (!this.done && this.partial) this.line(this.partial);
    this.partial = "";
    return this;
  }

  private line(raw: string): void {
    if (this.done) return;
    const line = raw.replace(/\r$/, "");
    if (/^Filelist\b/.test(line)) {
      this.done = true;
      return;
    }
    const vol = /^Volume (\d+):\s*$/.exec(line);
    if (vol) {
      this.current = Number(vol[1]);
      // A resumed backup lists the volume it sent again a second time; the later entry describes
      // the stored file, as duplicity itself reads it (the last one wins).
      if (this.volumes.has(this.current)) this.repeated.add(this.current);
      this.volumes.delete(this.current);
      this.volumes.set(this.current, null);
      return;
    }
    if (!/^\s/.test(line)) {
      this.current = null;
      return;
    }
    const hash = /^\s+Hash\s+(\S+)\s+([0-9A-Fa-f]+)\s*$/.exec(line);
    if (hash && this.current !== null) {
      const named = hash[1]!;
      this.volumes.set(this.current, { algorithm: ALGORITHMS[named.toUpperCase()] ?? null, named, hex: hash[2]!.toLowerCase() });
    }
  }
}
