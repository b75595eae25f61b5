// `mkdir -p DIR` (duplicity runs it before every session) and plain `mkdir DIR`, done by the vault:
// directories are created one component at a time, never through a symbolic link.
import type { Context } from "../handler.js";
import type { Plan } from "../gate/decide.js";

export async function runMkdir(plan: Extract<Plan, { kind: "mkdir" }>, { vault }: Context): Promise<number> {
  const v = vault.resolve(plan.mkdir.dir);
  if (plan.mkdir.parents) vault.mkdirp(v);
  else vault.mkdir(v);
  return 0;
}
