// What the vault and the housekeeping commands ask of a profile: which names need the rest of
// their directory to be judged, whether a new name may be added, whether a stored one may be
// replaced, and what `pull: "metadata"` lets a client read. Config key `profile` picks one.
//
// Each profile builds its own index of a directory's names (`I`); only that profile reads it, so
// the vault holds it as an opaque value (Profile<unknown>) and no profile's types leak out.
export interface Profile<I = unknown> {
  readonly name: "duplicity" | "plain";
  /** Names the profile has no rule for need no directory listing. */
  judges(name: string): boolean;
  /** What the rules below need to know of a directory, from its names. */
  index(names: string[]): I;
  /** The index after `name` was added to its directory (cheaper than listing it again). */
  add(ix: I, name: string): void;
  /** Throws NOT_ALLOWED if `name` may not be added; returns the key of its set, if any. */
  checkNew(ix: I, name: string, nowSec: number, display: string): string | undefined;
  /** Throws EXISTS unless the stored `name` may be replaced; returns the key of its set. */
  checkReplace(ix: I, name: string, display: string): string;
  /** With `pull: "metadata"`: may `name` be read? */
  isMetadataRead(ix: I | undefined, name: string): boolean;
  /** Does reading `name` under `pull: "metadata"` depend on its directory? */
  readNeedsIndex(name: string): boolean;
}
