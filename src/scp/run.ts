// The scp handler: one side of the protocol on stdin/stdout. A refused entry is a warning and the
// transfer goes on (exit 1 at the end); anything that breaks the stream is a fatal \x02 line.
import { EXIT, toVbError, exitFor, type Context } from "../handler.js";
import type { Plan } from "../gate/decide.js";
import { Input, Output, PeerGone, Idle, FATAL } from "./stream.js";
import { Sink } from "./sink.js";
import { Source } from "./source.js";
import { throttleFor } from "../throttle.js";

export async function runScp(plan: Extract<Plan, { kind: "scp" }>, ctx: Context): Promise<number> {
  const { limits } = ctx.session.policy;
  const throttle = throttleFor(limits);
  const input = new Input(process.stdin, limits.idleSeconds * 1000, throttle);
  const out = new Output(process.stdout, limits.idleSeconds * 1000, throttle);
  const side = plan.scp.direction === "sink" ? new Sink(plan.scp, ctx, input, out) : new Source(plan.scp, ctx, input, out);
  try {
    await side.run();
    return side.warnings ? EXIT.refused : EXIT.ok;
  } catch (e) {
    const err = toVbError(e);
    ctx.session.audit.event("error", { protocol: "scp", code: err.code, reason: err.message });
    if (err instanceof Idle) process.stderr.write(`validate-backup: scp: ${err.message}\n`);
    else if (!(err instanceof PeerGone)) await out.say(FATAL, err.message).catch(() => {});
    return exitFor(err);
  } finally {
    input.close();
  }
}
