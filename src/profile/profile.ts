// The profiles by name (config key `profile`).
import { DirIndex, checkNew, checkReplace, isMetadataRead, classify } from "./duplicity.js";
import { plain } from "./plain.js";
import type { Profile } from "./types.js";

const duplicity: Profile<DirIndex> = {
  name: "duplicity",
  judges: (name) => classify(name).kind !== "other",
  index: (names) => new DirIndex(names),
  add: (ix, name) => ix.add(name),
  checkNew: (ix, name, now, display) => checkNew(ix, name, now, display)?.setKey,
  checkReplace: (ix, name, display) => checkReplace(ix, name, display).setKey,
  isMetadataRead,
  readNeedsIndex: (name) => /\.vol1\.difftar/.test(name),
};

export const PROFILES: Record<Profile["name"], Profile> = { duplicity, plain };

export function profileFor(name: Profile["name"]): Profile {
  return PROFILES[name];
}
