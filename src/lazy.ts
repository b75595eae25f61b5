// node's modules that most sessions never use, loaded at their first use instead of with the module
// that names them: node:crypto (with the streams it loads) costs a session ~10 ms of start-up, and
// a refused command or a listing hashes nothing with it; node:worker_threads only serves an upload
// past 16 MiB (vault/hasher.ts).
import { createRequire } from "node:module";

type Crypto = typeof import("node:crypto");
type WorkerThreads = typeof import("node:worker_threads");

const load = createRequire(import.meta.url);
let crypto: Crypto | undefined;
let threads: WorkerThreads | undefined;

export function nodeCrypto(): Crypto {
  return (crypto ??= load("node:crypto") as Crypto);
}

/** Whether node:crypto is loaded already (audit/chain.ts hashes in JavaScript until it is). */
export function nodeCryptoLoaded(): boolean {
  return crypto !== undefined;
}

export function workerThreads(): WorkerThreads {
  return (threads ??= load("node:worker_threads") as WorkerThreads);
}
