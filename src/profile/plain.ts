// The plain profile, for data that is not duplicity's (restic repositories, plain trees): no
// naming rules, nothing is ever replaced, and no file is "metadata" a restricted pull may read.
import { existsError } from "../errors.js";
import type { Profile } from "./types.js";

export const plain: Profile = {
  name: "plain",
  judges: () => false,
  index: () => undefined,
  add: () => undefined,
  checkNew: () => undefined,
  checkReplace: (_ix, _name, display) => {
    throw existsError(display);
  },
  isMetadataRead: () => false,
  readNeedsIndex: () => false,
};
