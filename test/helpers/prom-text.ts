// A strict reader of Prometheus' text exposition format (0.0.4), as the node exporter's textfile
// collector reads it, for tests: every rule the format states is checked, anything else throws.
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(s: string, where: string): number {
  if (s === "NaN") return NaN;
  if (s === "+Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: value ${JSON.stringify(s)}`);
  return Number(s);
}

/** label="value",… up to the closing brace: escapes \\ \" \n only. Returns labels and the rest of the line. */
function parseLabels(s: string, where: string): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let i = 0;
  for (;;) {
    if (s[i] === "}") return [labels, s.slice(i + 1)];
    const eq = s.indexOf("=", i);
    if (eq < 0) throw new Error(`${where}: label without '='`);
    const name = s.slice(i, eq);
    if (!LABEL_NAME.test(name) || name.startsWith("__")) throw new Error(`${where}: label name ${JSON.stringify(name)}`);
    if (Object.hasOwn(labels, name)) throw new Error(`${where}: label ${name} twice`);
    if (s[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let v = "";
    let j = eq + 2;
    for (;; j++) {
      const c = s[j];
      if (c === undefined) throw new Error(`${where}: unterminated label value`);
      if (c === "\n") throw new Error(`${where}: raw newline in a label value`);
      if (c === '"') break;
      if (c === "\\") {
        const e = s[++j];
        if (e === "\\") v += "\\";
        else if (e === '"') v += '"';
        else if (e === "n") v += "\n";
        else throw new Error(`${where}: bad escape \\${e}`);
      } else v += c;
    }
    labels[name] = v;
    i = j + 1;
    if (s[i] === ",") i++;
    else if (s[i] !== "}") throw new Error(`${where}: expected ',' or '}' after a label`);
  }
}

export function parseProm(text: string): { samples: Sample[]; help: Map<string, string>; types: Map<string, string> } {
  if (!text.endsWith("\n")) throw new Error("the last line must end with a newline");
  const samples: Sample[] = [];
  const help = new Map<string, string>();
  const types = new Map<string, string>();
  const done = new Set<string>();
  let current: string | undefined;
  const enter = (name: string, where: string) => {
    if (name === current) return;
    if (done.has(name)) throw new Error(`${where}: family ${name} appears in two places`);
    if (current) done.add(current);
    current = name;
  };
  text
    .slice(0, -1)
    .split("\n")
    .forEach((line, n) => {
      const where = `line ${n + 1}`;
      if (line.trim() === "") return;
      if (line.startsWith("#")) {
        const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
        if (!m) return; // another comment
        const [, kw, name, rest] = m as unknown as [string, string, string, string];
        if (!NAME.test(name)) throw new Error(`${where}: metric name ${JSON.stringify(name)}`);
        enter(name, where);
        if (kw === "HELP") {
          if (help.has(name)) throw new Error(`${where}: second HELP for ${name}`);
          if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`${where}: bad escape in HELP`);
          help.set(name, rest.replace(/\\(\\|n)/g, (_, e: string) => (e === "n" ? "\n" : "\\")));
        } else {
          if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
          if (samples.some((s) => s.name === name)) throw new Error(`${where}: TYPE after samples of ${name}`);
          if (!TYPES.has(rest)) throw new Error(`${where}: type ${JSON.stringify(rest)}`);
          types.set(name, rest);
        }
        return;
      }
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(line);
      if (!m) throw new Error(`${where}: not a sample: ${JSON.stringify(line)}`);
      const name = m[1]!;
      let rest = m[2]!;
      let labels: Record<string, string> = {};
      if (rest.startsWith("{")) [labels, rest] = parseLabels(rest.slice(1), where);
      const parts = rest.split(" ");
      if (parts[0] !== "" || parts.length < 2 || parts.length > 3) throw new Error(`${where}: expected ' value [timestamp]': ${JSON.stringify(rest)}`);
      const value = parseValue(parts[1]!, where);
      if (parts[2] !== undefined && !/^-?\d+$/.test(parts[2])) throw new Error(`${where}: timestamp ${JSON.stringify(parts[2])}`);
      enter(name, where);
      const key = JSON.stringify([name, Object.entries(labels).sort()]);
      if (samples.some((s) => JSON.stringify([s.name, Object.entries(s.labels).sort()]) === key)) throw new Error(`${where}: the same series twice`);
      samples.push({ name, labels, value });
    });
  return { samples, help, types };
}
