// The review as text for root's terminal. Every cell goes through visible(): the log's fields are
// sanitized when written, but a log edited by hand or a JSON escape (\u001b) can still hold them.
import { visible } from "./sanitize.js";
import { LISTED_REFUSALS, type Review } from "./review.js";
import { bytes } from "./units.js";

/** Rows as aligned columns (each at most 60 wide, the last as long as it is), control characters made visible. */
export function columns(rows: string[][]): string[] {
  const shown = rows.map((r) => r.map(visible));
  const widths: number[] = [];
  for (const r of shown) r.forEach((c, i) => (widths[i] = Math.min(60, Math.max(widths[i] ?? 0, c.length))));
  return shown.map((r) => "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "));
}

const n = (x: number) => x.toLocaleString("en-US");

export function render(r: Review, deniedOnly: boolean): string {
  const out: string[] = [];
  for (const f of r.files) out.push(visible(`audit log ${f.file}: ${f.lines} lines; chain ${f.chain}`));
  if (r.since) out.push(`since ${r.since}`);
  if (!deniedOnly) {
    out.push("", "Sessions per key");
    out.push(
      ...columns([
        ["KEY", "SESSIONS", "DENIED", "REFUSALS", "FILES", "BYTES", "LAST UPLOAD", "CLIENTS"],
        ...r.keys.map((k) => [k.label, String(k.sessions), String(k.denied), String(k.refused), String(k.files), bytes(k.bytes), k.lastUpload ?? "never", k.clients.join(" ") + (k.clientCount > k.clients.length ? ` (+${n(k.clientCount - k.clients.length)} more)` : "")]),
      ]),
    );
    out.push("", "Uploads per day");
    out.push(...(r.days.length ? columns([["DAY", "KEY", "FILES", "BYTES"], ...r.days.map((d) => [d.day, d.label, String(d.files), bytes(d.bytes)])]) : ["  none"]));
  }
  out.push("", `Refusals (${r.refusalCount})`);
  if (r.refusalCount > r.refusals.length)
    out.push(`  ${n(r.refusalCount)} in all${r.refusalsUnlogged ? `, ${n(r.refusalsUnlogged)} of them only counted by their session (past its logging cap)` : ""}; per key and kind:`, ...columns([["KEY", "KIND", "CODE", "COUNT"], ...r.refusalSummary.map((s) => [s.label, s.kind, s.code, String(s.count)])]), "", `  the latest ${Math.min(r.refusals.length, LISTED_REFUSALS)} (narrow with --since):`);
  out.push(...(r.refusals.length ? columns([["TIME", "KEY", "CLIENT", "KIND", "CODE", "REASON"], ...r.refusals.map((x) => [x.time, x.label, x.client, x.kind, x.code || x.event, x.what ? `${x.reason} [${x.what}]` : x.reason])]) : ["  none"]));
  if (!deniedOnly) {
    out.push("", `Anomalies (${r.anomalyCount})`);
    if (r.anomalyCount > r.anomalies.length) out.push(`  ${n(r.anomalyCount - r.anomalies.length)} more not listed (narrow with --since)`);
    if (r.untrackedClientLines) out.push(`  ${n(r.untrackedClientLines)} lines came from client addresses past the review's bound of remembered ones: not judged new or known`);
    out.push(...(r.anomalies.length ? columns([["TIME", "KEY", "KIND", "DETAIL"], ...r.anomalies.map((a) => [a.time, a.label, a.kind, a.detail])]) : ["  none"]));
  }
  return out.join("\n");
}
