// The lines the other side runs against a key install-remote just put in place, printed at the end
// of its run: the duplicity URL with --ssh-options, rsync and sftp for an append-only key (SOURCE
// backs up), rsync for a read-only one (REMOTE pulls). README's "On SOURCE" says the same.
import os from "node:os";
import path from "node:path";

export interface ExampleKey {
  user: string;
  root: string;
  /** The public key file given to install-remote; its private half has the same name without .pub. */
  keyFile: string;
  access: "append-only" | "read-only";
}

export function sourceExample(k: ExampleKey, host = os.hostname()): string[] {
  // Where such a key usually lives on the other side; the name is the one the admin gave us.
  const identity = `/root/.ssh/${path.basename(k.keyFile).replace(/\.pub$/, "")}`;
  const at = `${k.user}@${host}`;
  const note = `${identity} is the private half of ${k.keyFile}, ${host} this host as the other side reaches it`;
  if (k.access === "read-only")
    return [
      `On the host that pulls (${note}):`,
      `  rsync -a -e 'ssh -i ${identity}' ${at}:${k.root}/ /srv/pulled/`,
      `  sftp -i ${identity} ${at}:${k.root}/        (get; every write is refused)`,
    ];
  return [
    `On SOURCE (${note}; README "On SOURCE" has the whole duplicity setup):`,
    // sftp://user@host//abs: the path after the host's '/' is absolute, as README writes it.
    `  duplicity --encrypt-key FPR --sign-key FPR --ssh-options="-oIdentityFile=${identity}" /etc sftp://${at}/${k.root}/etc`,
    // Relative paths are below the root, as README's table of clients writes them.
    `  rsync -a --ignore-existing -e 'ssh -i ${identity}' DIR/ ${at}:DIR/`,
    `  sftp -i ${identity} ${at}        (put FILE; nothing stored can be changed or removed)`,
  ];
}
