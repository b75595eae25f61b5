// Request x Policy -> Plan, or a refusal. Pure: the protocol code only ever sees a Plan.
import { VbError } from "../errors.js";
import type { Policy, Protocol } from "../config/schema.js";
import type { Request, RequestKind } from "./command.js";
import { demand } from "./access.js";
import { parseRsyncArgs, type RsyncRequest } from "./rsync-args.js";
import { parseScpArgs, type ScpRequest } from "./scp-args.js";
import { parseMkdirArgs, parseLsArgs, type MkdirRequest, type LsRequest } from "./emulate-args.js";

export type Plan =
  | { kind: "true" }
  | { kind: "sftp" }
  | { kind: "rsync"; rsync: RsyncRequest }
  | { kind: "scp"; scp: ScpRequest }
  | { kind: "mkdir"; mkdir: MkdirRequest }
  | { kind: "ls"; ls: LsRequest };

const PROTOCOL_OF: Record<RequestKind, Protocol | null> = {
  true: null,
  sftp: "sftp",
  rsync: "rsync",
  scp: "scp",
  // duplicity's paramiko+scp backend sends these around its scp transfers
  mkdir: "scp",
  ls: "scp",
  rm: "scp",
};

// Flags of the sftp-server command line that only concern logging; any other flag (-d, -R, -u,
// -P, -p, …) would change what the server does and is refused, never obeyed.
const SFTP_LOG_FLAGS: Record<string, "arg" | "none"> = { "-l": "arg", "-f": "arg", "-e": "none" };

function checkSftpArgs(args: string[]): void {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const kind = Object.hasOwn(SFTP_LOG_FLAGS, a) ? SFTP_LOG_FLAGS[a] : undefined;
    if (!kind) throw new VbError("NOT_ALLOWED", `sftp-server option '${a}' is not allowed (only -l, -f and -e, which are ignored)`);
    if (kind === "arg") {
      if (!/^[A-Za-z0-9]{1,16}$/.test(args[i + 1] ?? "")) throw new VbError("NOT_ALLOWED", `sftp-server option '${a}' needs a plain word`);
      i++;
    }
  }
}

export function decide(req: Request, policy: Policy): Plan {
  const protocol = PROTOCOL_OF[req.kind];
  if (protocol && !policy.protocols.includes(protocol))
    throw new VbError("NOT_ALLOWED", `${protocol} is disabled for this key (protocols: ${policy.protocols.join(", ")})`);
  switch (req.kind) {
    case "true":
      return { kind: "true" };
    case "sftp":
      checkSftpArgs(req.args);
      return { kind: "sftp" };
    case "rsync": {
      const rsync = parseRsyncArgs(req.args, policy.root);
      if (rsync.sender) demand(policy, "pull", "reading (rsync --sender)");
      else demand(policy, "write", "this key cannot upload (rsync push refused)");
      return { kind: "rsync", rsync };
    }
    case "scp": {
      const scp = parseScpArgs(req.args, policy.root);
      if (scp.direction === "source") demand(policy, "pull", "reading (scp -f)");
      else demand(policy, "write", "this key cannot upload (scp -t refused)");
      return { kind: "scp", scp };
    }
    case "mkdir": {
      const mkdir = parseMkdirArgs(req.args, policy.root);
      demand(policy, "write", "this key cannot create directories (mkdir refused)");
      return { kind: "mkdir", mkdir };
    }
    case "ls":
      return { kind: "ls", ls: parseLsArgs(req.args, policy.root) };
    case "rm": // duplicity's remove-older-than and cleanup: nothing stored can be removed through this key
      demand(policy, "write", "files cannot be removed (rm refused)");
      throw new VbError("IMMUTABLE", "append-only: files cannot be removed (rm refused)");
  }
}
