// Sizes and durations as the commands print them: every age a command words (the review's gaps,
// prune's reasons and warning, status and notify) comes from duration() below.
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * How a duration is worded. Days from two days on, else hours: `whole` counts whole units (prune's
 * reasons, "3 days", "0 hours"), `tenths` one decimal (the review), `short` one decimal with "h",
 * and minutes under an hour (status's column, notify's message).
 */
const STYLES = {
  whole: { digits: 0, hour: "hours", minutes: false },
  tenths: { digits: 1, hour: "hours", minutes: false },
  short: { digits: 1, hour: "h", minutes: true },
} as const;
export type DurationStyle = keyof typeof STYLES;

export function duration(ms: number, style: DurationStyle = "tenths"): string {
  const s = STYLES[style];
  const n = (x: number) => (s.digits ? x.toFixed(s.digits) : String(Math.floor(x)));
  if (s.minutes && ms < HOUR) return `${Math.floor(ms / 60_000)} min`;
  return ms >= 2 * DAY ? `${n(ms / DAY)} days` : `${n(ms / HOUR)} ${s.hour}`;
}

/** How long ago something happened, `ms` before now; a time ahead of the clock is said as such. */
export function ago(ms: number, style: DurationStyle): string {
  return ms < 0 ? "in the future" : `${duration(ms, style)} ago`;
}

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
