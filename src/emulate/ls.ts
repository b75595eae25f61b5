// `ls -1 DIR` (duplicity's listing): the names in DIR, one per line, in C-locale order, without
// dot files, as ls prints them to a pipe. Entries are listed, never followed.
import { byteOrder } from "../scp/glob.js";
import type { Context } from "../handler.js";
import type { Plan } from "../gate/decide.js";
import { Output } from "../scp/stream.js";

export async function runLs(plan: Extract<Plan, { kind: "ls" }>, { vault, session }: Context): Promise<number> {
  const v = vault.resolve(plan.ls.path);
  const st = vault.lstat(v);
  const out = new Output(process.stdout, session.policy.limits.idleSeconds * 1000);
  if (!st.isDirectory()) {
    await out.write(`${plan.ls.path}\n`);
    return 0;
  }
  const names: string[] = [];
  for (const batch of vault.list(v)) for (const e of batch) if (!e.name.startsWith(".")) names.push(e.name);
  names.sort(byteOrder);
  session.audit.event("list", { path: v.display, entries: names.length }); // before anything is served
  for (let i = 0; i < names.length; i += 500) await out.write(names.slice(i, i + 500).join("\n") + "\n");
  return 0;
}
