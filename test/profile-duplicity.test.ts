import t, { type Test } from "tap";
import {
  parseName,
  parseTime,
  formatTime,
  classify,
  DirIndex,
  checkNew,
  checkReplace,
  isMetadataRead,
  chainsOf,
  namesOf,
  looksLikeDuplicity,
  CLOCK_SKEW_SECONDS,
} from "../src/profile/duplicity.js";
import { profileFor } from "../src/profile/profile.js";
import { VbError } from "../src/errors.js";

const NOW = parseTime("20250601T120000Z");
const T0 = "20250101T000000Z";
const T1 = "20250102T000000Z";
const T2 = "20250103T000000Z";
const T3 = "20250104T000000Z";

const full = (t: string, sfx = ".gpg", vols = 2, manifest = true) => [
  ...Array.from({ length: vols }, (_, i) => `duplicity-full.${t}.vol${i + 1}.difftar${sfx}`),
  `duplicity-full-signatures.${t}.sigtar${sfx}`,
  ...(manifest ? [`duplicity-full.${t}.manifest${sfx === ".gpg" ? ".gpg" : ""}`] : []),
];
const inc = (a: string, b: string, sfx = ".gpg", vols = 1, manifest = true) => [
  ...Array.from({ length: vols }, (_, i) => `duplicity-inc.${a}.to.${b}.vol${i + 1}.difftar${sfx}`),
  `duplicity-new-signatures.${a}.to.${b}.sigtar${sfx}`,
  ...(manifest ? [`duplicity-inc.${a}.to.${b}.manifest${sfx === ".gpg" ? ".gpg" : ""}`] : []),
];

function refusal(t: Test, fn: () => unknown, code: string, re: RegExp): void {
  try {
    fn();
    t.fail(`expected ${code} ${re}`);
  } catch (e) {
    t.ok(e instanceof VbError, "a VbError");
    t.equal((e as VbError).code, code);
    t.match((e as VbError).message, re);
  }
}

t.test("times: exact UTC round trip, impossible dates refused", async (t) => {
  t.equal(parseTime("20250101T000000Z"), Date.UTC(2025, 0, 1) / 1000);
  t.equal(formatTime(parseTime("20241231T235959Z")), "20241231T235959Z");
  for (const bad of ["20250231T000000Z", "20251301T000000Z", "20250101T240000Z", "20250101T000060Z", "2025-01-01T00:00:00Z", "20250101T000000z", "20250101T000000+01:00", ""])
    t.ok(Number.isNaN(parseTime(bad)), bad);
});

t.test("parse: the names duplicity 0.8 writes", async (t) => {
  t.match(parseName(`duplicity-full.${T0}.vol12.difftar.gpg`), { kind: "full", role: "vol", vol: 12, suffix: ".gpg", setKey: `full:${parseTime(T0)}`, memberKey: "vol:12" });
  t.match(parseName(`duplicity-full.${T0}.vol1.difftar.gz`), { suffix: ".gz" });
  t.match(parseName(`duplicity-full.${T0}.vol1.difftar`), { suffix: "" });
  t.match(parseName(`duplicity-full.${T0}.manifest.gpg`), { role: "manifest", memberKey: "manifest" });
  t.match(parseName(`duplicity-full.${T0}.manifest`), { role: "manifest", suffix: "" });
  t.match(parseName(`duplicity-full-signatures.${T0}.sigtar.gz`), { kind: "full", role: "sig", setKey: `full:${parseTime(T0)}` });
  t.match(parseName(`duplicity-inc.${T0}.to.${T1}.vol3.difftar.gpg`), { kind: "inc", start: parseTime(T0), end: parseTime(T1), vol: 3, setKey: `inc:${parseTime(T0)}:${parseTime(T1)}` });
  t.match(parseName(`duplicity-inc.${T0}.to.${T1}.manifest.gpg`), { kind: "inc", role: "manifest" });
  t.match(parseName(`duplicity-new-signatures.${T0}.to.${T1}.sigtar.gpg`), { kind: "inc", role: "sig", setKey: `inc:${parseTime(T0)}:${parseTime(T1)}` });
});

t.test("classify: duplicity-shaped names we do not understand are foreign, not 'other'", async (t) => {
  for (const n of [
    `duplicity-full.${T0}.manifest.gz`, // duplicity never gzips a manifest
    `duplicity-full.${T0}.vol0.difftar.gpg`,
    `duplicity-full.${T0}.vol01.difftar.gpg`,
    `duplicity-full.${T0}.vol1.difftar.gpg.x`,
    `duplicity-full.${T0}.vol1.difftar.part`,
    `duplicity-full.20250231T000000Z.manifest.gpg`,
    `duplicity-full.2025-01-01T00:00:00+01:00.manifest.gpg`, // --old-filenames
    "duplicity-full.now.manifest",
    "duplicity-whatever",
    "df.kx2f3a.m", // --short-filenames manifest
    "df.kx2f3a.1.dt.g",
    "di.kx2f3a.kx2f4b.m.g",
    "dfs.kx2f3a.st.g",
    "dns.kx2f3a.kx2f4b.st",
  ]) {
    t.ok(looksLikeDuplicity(n), n);
    t.equal(classify(n).kind, "foreign", n);
  }
  for (const n of ["restic-config", "a.gpg", ".duplicity-full.x.part", "data/x", "dfx", "df.txt", "README"]) t.equal(classify(n).kind, "other", n);
});

t.test("checkNew: a normal full backup, then incrementals, is accepted name by name", async (t) => {
  const ix = new DirIndex();
  for (const n of [...full(T0), ...inc(T0, T1), ...inc(T1, T2)]) {
    t.doesNotThrow(() => checkNew(ix, n, NOW), n);
    ix.add(n);
  }
  t.equal(checkNew(ix, "notes.txt", NOW), undefined, "other names have no rule");
});

t.test("checkNew: names dated in the future beyond the skew are refused", async (t) => {
  const ix = new DirIndex();
  const soon = formatTime(NOW + CLOCK_SKEW_SECONDS - 1);
  const late = formatTime(NOW + CLOCK_SKEW_SECONDS + 1);
  t.doesNotThrow(() => checkNew(ix, `duplicity-full.${soon}.vol1.difftar.gpg`, NOW), "within the skew");
  refusal(t, () => checkNew(ix, `duplicity-full.${late}.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /in the future/);
  refusal(t, () => checkNew(ix, `duplicity-full.20991231T000000Z.manifest.gpg`, NOW), "NOT_ALLOWED", /20991231T000000Z, in the future/);
  const ix2 = new DirIndex(full(T0));
  refusal(t, () => checkNew(ix2, `duplicity-inc.${T0}.to.20991231T000000Z.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /in the future/);
});

t.test("checkNew: a set key repeated under another suffix is refused", async (t) => {
  const ix = new DirIndex([`duplicity-full.${T0}.vol1.difftar.gpg`, `duplicity-full.${T0}.manifest.gpg`]);
  refusal(t, () => checkNew(ix, `duplicity-full.${T0}.manifest`, NOW), "NOT_ALLOWED", /repeats 'duplicity-full\..*\.manifest\.gpg' .* another suffix/);
  refusal(t, () => checkNew(ix, `duplicity-full.${T0}.vol1.difftar.gz`, NOW), "NOT_ALLOWED", /repeats .*vol1\.difftar\.gpg/);
  // An unfinished set: a new volume with another suffix than its siblings.
  const open = new DirIndex([`duplicity-full.${T1}.vol1.difftar.gpg`]);
  refusal(t, () => checkNew(open, `duplicity-full.${T1}.vol2.difftar.gz`, NOW), "NOT_ALLOWED", /suffix of the other files/);
  refusal(t, () => checkNew(open, `duplicity-full.${T1}.manifest`, NOW), "NOT_ALLOWED", /suffix of the other files/);
  refusal(t, () => checkNew(open, `duplicity-full-signatures.${T1}.sigtar`, NOW), "NOT_ALLOWED", /suffix/);
  t.doesNotThrow(() => checkNew(open, `duplicity-full-signatures.${T1}.sigtar.gpg`, NOW));
  // Unencrypted, compressed: volumes .gz, manifest plain.
  const gz = new DirIndex([`duplicity-full.${T2}.vol1.difftar.gz`, `duplicity-full-signatures.${T2}.sigtar.gz`]);
  t.doesNotThrow(() => checkNew(gz, `duplicity-full.${T2}.manifest`, NOW));
  refusal(t, () => checkNew(gz, `duplicity-full.${T2}.manifest.gpg`, NOW), "NOT_ALLOWED", /suffix/);
});

t.test("checkNew: additions to a finished set are refused", async (t) => {
  const ix = new DirIndex([...full(T0), ...inc(T0, T1)]);
  refusal(t, () => checkNew(ix, `duplicity-full.${T0}.vol3.difftar.gpg`, NOW), "NOT_ALLOWED", /adds to a finished backup set .*manifest\.gpg' is stored/);
  refusal(t, () => checkNew(ix, `duplicity-inc.${T0}.to.${T1}.vol2.difftar.gpg`, NOW), "NOT_ALLOWED", /finished backup set/);
  const noSig = new DirIndex([`duplicity-full.${T2}.vol1.difftar.gpg`, `duplicity-full.${T2}.manifest.gpg`]);
  refusal(t, () => checkNew(noSig, `duplicity-full-signatures.${T2}.sigtar.gpg`, NOW), "NOT_ALLOWED", /finished/);
});

t.test("checkNew: an incremental whose start time is taken, or that continues nothing, is refused", async (t) => {
  const ix = new DirIndex([...full(T0), ...inc(T0, T1)]);
  // A fake manifest for a real incremental's start time.
  refusal(t, () => checkNew(ix, `duplicity-inc.${T0}.to.${T2}.manifest.gpg`, NOW), "NOT_ALLOWED", new RegExp(`starts at ${T0}, where another incremental`));
  refusal(t, () => checkNew(ix, `duplicity-new-signatures.${T0}.to.${T3}.sigtar.gpg`, NOW), "NOT_ALLOWED", /another incremental/);
  // Also while the real incremental is still being uploaded (no manifest yet).
  const open = new DirIndex([...full(T0), ...inc(T0, T1, ".gpg", 2, false)]);
  refusal(t, () => checkNew(open, `duplicity-inc.${T0}.to.${T2}.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /another incremental/);
  // An incremental must continue a finished set.
  refusal(t, () => checkNew(ix, `duplicity-inc.${T2}.to.${T3}.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /where no finished backup set ends/);
  const unfinishedFull = new DirIndex(full(T2, ".gpg", 1, false));
  refusal(t, () => checkNew(unfinishedFull, `duplicity-inc.${T2}.to.${T3}.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /no finished backup set/);
  refusal(t, () => checkNew(ix, `duplicity-inc.${T1}.to.${T1}.vol1.difftar.gpg`, NOW), "NOT_ALLOWED", /ends before it starts/);
  t.doesNotThrow(() => checkNew(ix, `duplicity-inc.${T1}.to.${T2}.vol1.difftar.gpg`, NOW), "the real next one");
});

t.test("checkNew: foreign duplicity-shaped names are refused", async (t) => {
  const ix = new DirIndex();
  refusal(t, () => checkNew(ix, "df.kx2f3a.m", NOW), "NOT_ALLOWED", /not a name duplicity 0\.8 writes/);
  refusal(t, () => checkNew(ix, `duplicity-full.${T0}.manifest.gpg.old`, NOW), "NOT_ALLOWED", /looks like a duplicity file/);
});

t.test("checkReplace: only the last volume and the signatures of an unfinished set", async (t) => {
  const ix = new DirIndex([...full(T0), ...full(T1, ".gpg", 3, false)]);
  t.equal(checkReplace(ix, `duplicity-full.${T1}.vol3.difftar.gpg`).setKey, `full:${parseTime(T1)}`);
  t.doesNotThrow(() => checkReplace(ix, `duplicity-full-signatures.${T1}.sigtar.gpg`));
  refusal(t, () => checkReplace(ix, `duplicity-full.${T1}.vol2.difftar.gpg`), "EXISTS", /only the last volume .* vol3/);
  refusal(t, () => checkReplace(ix, `duplicity-full.${T0}.vol2.difftar.gpg`), "EXISTS", /finished/);
  refusal(t, () => checkReplace(ix, `duplicity-full.${T0}.manifest.gpg`), "EXISTS", /finished/);
  refusal(t, () => checkReplace(ix, "other.txt"), "EXISTS", /not a file of a duplicity backup set/);
  const planted = new DirIndex([`duplicity-full.${T2}.vol1.difftar.gpg`, `duplicity-full.${T2}.vol1.difftar.gz`]);
  refusal(t, () => checkReplace(planted, `duplicity-full.${T2}.vol1.difftar.gpg`), "EXISTS", /more than one suffix/);
});

t.test("metadata reads: manifests, signatures, and volume 1 of an unfinished set only", async (t) => {
  const ix = new DirIndex([...full(T0), ...full(T1, ".gpg", 2, false)]);
  t.ok(isMetadataRead(ix, `duplicity-full.${T0}.manifest.gpg`));
  t.ok(isMetadataRead(ix, `duplicity-full-signatures.${T0}.sigtar.gpg`));
  t.ok(isMetadataRead(ix, `duplicity-new-signatures.${T0}.to.${T1}.sigtar.gpg`));
  t.notOk(isMetadataRead(ix, `duplicity-full.${T0}.vol1.difftar.gpg`), "a finished set's volume");
  t.ok(isMetadataRead(ix, `duplicity-full.${T1}.vol1.difftar.gpg`), "vol1 of an unfinished set (resume checks its passphrase)");
  t.notOk(isMetadataRead(ix, `duplicity-full.${T1}.vol2.difftar.gpg`));
  t.notOk(isMetadataRead(ix, "other.txt"));
  t.notOk(profileFor("plain").isMetadataRead(ix, `duplicity-full.${T0}.manifest.gpg`));
});

t.test("chains: fulls with the incrementals that continue them; orphans apart", async (t) => {
  const ix = new DirIndex([...full(T0), ...inc(T0, T1), ...inc(T1, T2), ...full(T3), ...inc("20250201T000000Z", "20250202T000000Z"), "other.txt"]);
  const { chains, orphans } = chainsOf(ix);
  t.equal(chains.length, 2);
  const first = chains.find((c) => c.full.start === parseTime(T0))!;
  t.equal(first.sets.length, 3);
  t.equal(first.sets.flatMap(namesOf).length, full(T0).length + 2 * inc(T0, T1).length);
  t.equal(orphans.length, 1);
  t.same(ix.others, ["other.txt"]);
});

t.test("plain profile: no rules, nothing replaceable", async (t) => {
  const p = profileFor("plain");
  const ix = new DirIndex();
  t.equal(p.checkNew(ix, "duplicity-full.20991231T000000Z.manifest.gpg", NOW, "x"), undefined);
  refusal(t, () => p.checkReplace(ix, "a", "a"), "EXISTS", /cannot be overwritten/);
  t.notOk(p.judges("duplicity-full.20991231T000000Z.manifest.gpg"));
  t.ok(profileFor("duplicity").judges("df.kx2f3a.m"));
});
