// What every bench script reads from its environment.

/** A positive whole number from the environment variable `name`, or `dflt`. */
export function num(name: string, dflt: number): number {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer`);
  return v;
}
