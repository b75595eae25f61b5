// jsonFault names where a config stops being JSON. JSON.parse is the oracle for whether it is JSON
// at all: on random damage to a real config, the two always agree; and the places named are the
// ones a person would fix.
import t from "tap";
import crypto from "node:crypto";
import { jsonFault } from "../src/config/json-syntax.js";
import { size } from "./helpers/scale.js";

const CONFIG = JSON.stringify({ label: "host1.example", root: "/srv/backup/host1", audit: { file: "/var/log/vb/host1.log" }, limits: { maxStoredBytes: 5e11, x: [1, -2.5e-3, true, null, "é\n\\"] } }, null, 2);
const BYTES = ["{", "}", "[", "]", ",", ":", '"', "'", "\\", "\n", " ", "0", "1", "-", "e", ".", "t", "n", "u", "\u0001", "x", "\ufeff"];

t.test("agrees with JSON.parse on damaged configs", async (t) => {
  const rnd = (n: number) => crypto.randomInt(n);
  let disagree = 0;
  const n = size("VB_JSON_FUZZ", 20_000, 2_000);
  for (let k = 0; k < n; k++) {
    let s = CONFIG;
    for (let j = 1 + rnd(3); j > 0; j--) {
      const i = rnd(s.length);
      const c = BYTES[rnd(BYTES.length)]!;
      s = [s.slice(0, i) + s.slice(i + 1), s.slice(0, i) + c + s.slice(i), s.slice(0, i) + c + s.slice(i + 1)][rnd(3)]!;
    }
    let ok = true;
    try {
      JSON.parse(s);
    } catch {
      ok = false;
    }
    if (ok !== (jsonFault(s) === null) && disagree++ < 3) t.fail(`disagrees on ${JSON.stringify(s)}`);
  }
  t.equal(disagree, 0, `${n} damaged texts`);
});

t.test("names the line, the column and what was expected", async (t) => {
  for (const [text, line, column, why] of [
    ['{\n  "a": 1,\n}\n', 3, 1, /trailing comma/],
    ['{\n  "a": 1\n  "b": 2\n}', 3, 3, /expected ',' or '}' after a value, found '"' \(a missing comma\?\)/],
    ["{'a': 1}", 1, 2, /double quotes/],
    ['{"a": "x\ny"}', 1, 9, /a line break inside a string/],
    ['{"a": 1', 1, 8, /found the end of the text/],
    ["", 1, 1, /expected a value/],
    ["\ufeff{}", 1, 1, /byte-order mark/],
    ["[".repeat(300), 1, 257, /nested more than 256 deep/],
  ] as const) {
    t.match(jsonFault(text), { line, column, why }, JSON.stringify(text.slice(0, 20)));
  }
  t.equal(jsonFault(CONFIG), null);
});
