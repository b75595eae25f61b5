// The shape of one entry of the request table (server.ts), shared by the handler families.
import type { Reader } from "./wire.js";
import type { Access } from "../gate/access.js";
import type { SftpContext } from "./context.js";

export type Reply = Buffer | Buffer[];

export interface Op<A> {
  readonly name: string;
  readonly decode: (r: Reader) => A;
  readonly access: Access | ((a: A) => Access);
  readonly run: (s: SftpContext, id: number, a: A) => Reply;
  /** What the request is about, for audit lines and messages. */
  readonly subject?: (a: A, s: SftpContext) => string | undefined;
}

/** Lets TypeScript infer each entry's argument type. */
export function op<A>(o: Op<A>): Op<A> {
  return o;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyOp = Op<any>;
