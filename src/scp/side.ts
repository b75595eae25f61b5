// What the sink and the source share: the session, the two streams, and how one refused entry is
// reported (a \x01 line the client prints before going on) and counted for the exit status.
import { toVbError, type Context } from "../handler.js";
import type { ScpRequest } from "../gate/scp-args.js";
import { readReply, WARN, type Input, type Output } from "./stream.js";

export abstract class Side {
  warnings = 0;

  constructor(
    protected readonly req: ScpRequest,
    protected readonly ctx: Context,
    protected readonly input: Input,
    protected readonly out: Output,
  ) {}

  abstract run(): Promise<void>;

  protected get vault() {
    return this.ctx.vault;
  }

  protected async refuse(shown: string, e: unknown): Promise<void> {
    const err = toVbError(e);
    this.warnings++;
    this.ctx.session.counters.refused++;
    this.ctx.session.audit.event("refused", { ...err.audit, protocol: "scp", path: shown, code: err.code, reason: err.message });
    await this.out.say(WARN, err.message.includes(shown) ? err.message : `${shown}: ${err.message}`);
  }

  /** The client's own warning (it could not read or write something): counted and audited. */
  protected clientError(message: string, fatal = false): void {
    this.warnings++;
    this.ctx.session.audit.event("client-error", { protocol: "scp", fatal, message });
  }

  /** The client's answer to what we sent; false if it declined. */
  protected async accepted(): Promise<boolean> {
    const r = await readReply(this.input);
    if (!r.ok) this.clientError(r.message);
    return r.ok;
  }
}
