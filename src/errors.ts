// One error type for every refusal and failure. The code maps to each protocol's own status
// (SFTP status, scp warning/fatal line, exit code) and the message is written for a person.

export const CODES = [
  "EXISTS", // the name exists and append-only forbids replacing it
  "IMMUTABLE", // the object existed before this session (or is not ours) and cannot be changed
  "OUTSIDE_ROOT", // the path leaves the backup root or crosses a symbolic link
  "READ_ONLY", // a write in read-only mode
  "NOT_ALLOWED", // a command, option or request that the policy refuses
  "QUOTA", // a configured limit was reached
  "BAD_REQUEST", // malformed input
  "NOT_FOUND",
  "IO", // an unexpected failure of the system
] as const;
export type Code = (typeof CODES)[number];

/** Facts for the refusal's audit line, beside code and reason: what a review reads, never parses from the message. */
export type AuditFields = Record<string, string | number | boolean>;

export class VbError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly audit?: AuditFields,
  ) {
    super(message);
    this.name = "VbError";
  }
}

/** The one refusal of append-only: a name that exists is never written again. */
export function existsError(display: string, why?: string): VbError {
  return new VbError("EXISTS", `append-only: '${display}' already exists and cannot be overwritten${why ? ` (${why})` : ""}`);
}

export function refuse(code: Code, message: string): never {
  throw new VbError(code, message);
}

// errno -> code, for system calls made on behalf of a client. The message names the path as the
// client gave it, never our internal (state or /proc) paths.
const ERRNO: Record<string, [Code, string]> = {
  ENOENT: ["NOT_FOUND", "no such file or directory"],
  ENOTDIR: ["NOT_FOUND", "a component of the path is not a directory"],
  EEXIST: ["EXISTS", "already exists and cannot be overwritten"],
  ELOOP: ["OUTSIDE_ROOT", "is a symbolic link, which is never followed"],
  EACCES: ["NOT_ALLOWED", "permission denied"],
  EPERM: ["NOT_ALLOWED", "operation not permitted"],
  ENOSPC: ["QUOTA", "no space left on the device"],
  EDQUOT: ["QUOTA", "disk quota exceeded"],
  ENAMETOOLONG: ["BAD_REQUEST", "name too long"],
  EISDIR: ["BAD_REQUEST", "is a directory"],
  ENOTEMPTY: ["IMMUTABLE", "directory not empty"],
};

export function fromErrno(err: unknown, display: string): VbError {
  if (err instanceof VbError) return err;
  const errno = (err as NodeJS.ErrnoException)?.code ?? "";
  const known = ERRNO[errno];
  if (known) return new VbError(known[0], `'${display}': ${known[1]}`);
  return new VbError("IO", `'${display}': ${(err as Error)?.message ?? String(err)}`);
}

/** An error as a report names it: its errno code (EIO, EPERM) when it has one, else its message. */
export function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);
}
