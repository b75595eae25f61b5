// Sizes as people write and read them: install-remote --quota 500G, "quota of 1.0 GiB reached".
// Units are powers of 1024, as df -h and the config's own defaults count.

const UNITS = ["", "K", "M", "G", "T", "P"] as const;

/** "500G", "1.5T", "64MiB", "1000" -> bytes; undefined when it is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d{1,15}(?:\.\d{1,6})?)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * 1024 ** UNITS.indexOf(m[2]!.toUpperCase() as (typeof UNITS)[number]));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** bytes -> "1.0 GiB" (or "512 bytes"). */
export function showSize(n: number): string {
  let i = 0;
  while (i < UNITS.length - 1 && n >= 1024 ** (i + 1)) i++;
  return i === 0 ? `${n} bytes` : `${(n / 1024 ** i).toFixed(1)} ${UNITS[i]}iB`;
}
