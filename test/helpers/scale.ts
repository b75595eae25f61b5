// How big the heavy tests are. `npm test` runs them at the sizes the acceptance criteria name
// (100,000 fuzz packets, 100,000 files for prune, a 1 GiB volume, …). CI has a 45-minute budget on
// two cores, so .ci/run sets VB_TEST_SCALE=quick: the same tests, the same assertions, smaller
// counts; the full-size figures come from a full run (see the closing notes of the issues).
export const QUICK = process.env.VB_TEST_SCALE === "quick";

/** The full size, or the quick one under VB_TEST_SCALE=quick; an explicit variable wins over both. */
export function size(envName: string, full: number, quick: number): number {
  const v = process.env[envName];
  if (v !== undefined && v !== "") return Number(v);
  return QUICK ? quick : full;
}

/** All of `items`, or under the quick scale every `every`-th one (the first always). */
export function sample<T>(items: readonly T[], every = 3): T[] {
  return QUICK ? items.filter((_, i) => i % every === 0) : [...items];
}

/** Test options for a case CI's quick scale leaves to the full run (`npm test`). */
export const FULL_ONLY = { skip: QUICK && "quick scale (CI): run in the full suite, npm test" };
