// One audit line as JSON text: {"level":…,"time":…,<the log's base fields>,<the event's fields>,"event":…}.
// This order is the log's format since its first lines (pino wrote them until it cost every session
// 8 ms of start-up to load); readers parse JSON, but a person and a grep see level and time first.
// Values come cleaned (sanitize.ts cleanValue): plain strings, numbers, booleans, arrays, objects.
export type Fields = Record<string, unknown>;
export type Level = "info" | "warn";

/** A refusal or an anomaly is a warning; the rest is information. */
export function levelOf(fields: Fields): Level {
  return fields.decision === "deny" || fields.anomaly ? "warn" : "info";
}

/** `,"key":value` for each field with a value (undefined and functions are left out, as JSON does). */
export function members(fields: Fields): string {
  let out = "";
  for (const key of Object.keys(fields)) {
    const value = fields[key];
    if (typeof value === "function") continue;
    const json = JSON.stringify(value);
    if (json !== undefined) out += `,${JSON.stringify(key)}:${json}`;
  }
  return out;
}

/** The line with its newline; `base` is members() of the base fields, made once per log. */
export function auditLine(level: Level, time: number, base: string, fields: Fields, event: string): string {
  return `{"level":"${level}","time":"${new Date(time).toISOString()}"${base}${members(fields)},"event":${JSON.stringify(event)}}\n`;
}
