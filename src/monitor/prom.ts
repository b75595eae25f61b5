// The Prometheus text exposition format (the node exporter's textfile collector reads it): one HELP
// and one TYPE line per family, then all its samples together; label values and HELP text escaped
// as the format says; the file replaced atomically (written aside in the same directory, renamed
// over), so the collector never reads half a file.
import fs from "node:fs";
import path from "node:path";
import { VbError } from "../errors.js";

export type Labels = Record<string, string>;

export interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: { labels: Labels; value: number }[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value: backslash, double quote and newline escaped. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text: backslash and newline escaped. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function value(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

export function render(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`metric name ${f.name}`);
    if (!f.samples.length) continue;
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels).map(([k, v]) => {
        if (!LABEL.test(k) || k.startsWith("__")) throw new Error(`label name ${k}`);
        return `${k}="${escapeLabel(v)}"`;
      });
      out.push(`${f.name}${labels.length ? `{${labels.join(",")}}` : ""} ${value(s.value)}`);
    }
  }
  return out.join("\n") + "\n";
}

/** Replace `file` with `text`: aside in the same directory (not named *.prom, which the collector would read), then renamed over. */
export function writeAtomically(file: string, text: string): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const C = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o644);
  } catch (e) {
    throw new VbError("IO", `cannot write in ${dir} (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    fs.fchmodSync(fd, 0o644); // whatever the umask: the collector runs as another user
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      /* closed */
    }
    fs.rmSync(tmp, { force: true });
    throw new VbError("IO", `cannot write ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
