// OPENDIR and READDIR: listings come from the vault in batches (lstat of each entry, links
// reported as links), so a huge directory never sits in memory at once.
import { FX, statusPacket } from "./wire.js";
import { fromStats, longname, namePacket } from "./attrs.js";
import { handleReply, handleOnly, handleSubject } from "./handles.js";
import { inside } from "./place.js";
import { op } from "./op.js";
import type { Entry } from "../vault/vault.js";

export const DIR_OPS = {
  opendir: op({
    name: "opendir",
    decode: (r) => ({ path: r.text("path") }),
    access: "look",
    subject: (a) => a.path,
    run(s, id, a) {
      const v = inside(s.vault, a.path);
      const batches = s.vault.list(v);
      // The first batch now, so a missing or non-directory path fails here and not at READDIR.
      let first: IteratorResult<Entry[], void>;
      try {
        first = batches.next();
      } catch (e) {
        batches.return(undefined);
        throw e;
      }
      return handleReply(s.handles, id, { kind: "dir", v, batches, first: first.done ? [] : first.value });
    },
  }),

  readdir: op({
    name: "readdir",
    decode: handleOnly,
    access: "look",
    subject: handleSubject,
    run(s, id, a) {
      const h = s.handles.of(a.handle, ["dir"], "readdir");
      let batch = h.first;
      h.first = undefined;
      if (!batch) {
        const next = h.batches.next();
        batch = next.done ? undefined : next.value;
      }
      if (!batch || batch.length === 0) return statusPacket(id, FX.EOF, "end of directory");
      const now = Date.now();
      return namePacket(
        id,
        batch.map((e) => ({ name: e.name, longname: longname(e.name, e.st, now), attrs: fromStats(e.st) })),
      );
    },
  }),
};
