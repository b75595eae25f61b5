// Serve one SFTP session on stdin/stdout until the client hangs up (or idles, or breaks the
// protocol). Unfinished uploads are abandoned when it ends: nothing partial is ever published.
import { EXIT, type Context } from "../handler.js";
import type { Plan } from "../gate/decide.js";
import { Sftp } from "./server.js";
import { pump, type End } from "./pump.js";
import { stdinInput } from "./input.js";
import { throttleFor } from "../throttle.js";

const OUTCOME: { [K in End["kind"]]: (end: Extract<End, { kind: K }>, ctx: Context) => number } = {
  eof: () => EXIT.ok,
  "output-closed": () => EXIT.ok,
  idle: (_end, { session }) => {
    const seconds = session.policy.limits.idleSeconds;
    session.audit.event("idle-timeout", { seconds });
    process.stderr.write(`validate-backup: sftp: no request for ${seconds} s, closing the session\n`);
    return EXIT.timeout;
  },
  protocol: (end) => {
    throw end.error; // serve.ts audits it and tells the client
  },
};

export async function serveSftp(_plan: Extract<Plan, { kind: "sftp" }>, ctx: Context): Promise<number> {
  const sftp = new Sftp(ctx.session, ctx.vault);
  const input = stdinInput();
  const output = process.stdout;
  try {
    const end = await pump({
      input,
      output: { fd: 1, stream: output },
      idleMs: ctx.session.policy.limits.idleSeconds * 1000,
      handle: (pkt) => sftp.handle(pkt),
      hold: (pkt) => sftp.hold(pkt),
      written: (b) => sftp.replies.release(b),
      throttle: throttleFor(ctx.session.policy.limits),
    });
    input.close(); // replies still queued are serve.ts's to give up on
    return (OUTCOME[end.kind] as (e: End, c: Context) => number)(end, ctx);
  } finally {
    await ctx.vault.pendingPublishes(); // answered uploads reach their names before the session ends
    sftp.close();
  }
}
