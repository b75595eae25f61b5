// The account step: the backup user exists (created as a system user with a group of its own), its
// login shell reads no rc files, it has no password and belongs to no other group.
import type { AccountStep } from "./plan.js";
import type { Change, Ctx } from "./change.js";
import { lookupUser, lookupGroup, allUsers, groupsOf, shadowField, noPassword, mustTool, shown, TOOLS, type Tool } from "./system.js";

function run(name: Tool, args: string[]): Pick<Change, "fix" | "do"> {
  return { fix: shown([TOOLS[name], ...args]), do: () => void mustTool(name, args) };
}

export function inspectAccount(s: AccountStep, ctx: Ctx): Change[] {
  const acct = lookupUser(s.user);
  if (!acct) {
    if (!s.create) return [{ what: `account ${s.user} does not exist`, fix: "run validate-backup install-remote" }];
    // --system: no password ageing, a uid outside the range of people. A group of its own, unless one
    // by that name already exists (then it must hold this account alone; checked on the next run).
    const group = lookupGroup(s.user) ? ["--gid", s.user] : ["--user-group"];
    return [{ what: `create system account ${s.user} (home ${s.path}, shell ${s.shell}, no password)`, ...run("useradd", ["--system", ...group, "--no-create-home", "--home-dir", s.path, "--shell", s.shell, "--password", "*", s.user]) }];
  }
  const out: Change[] = [];
  if (acct.home !== s.path) out.push({ what: `home of ${s.user}: ${acct.home} -> ${s.path}`, ...run("usermod", ["--home", s.path, s.user]) });
  if (acct.shell !== s.shell) out.push({ what: `login shell of ${s.user}: ${acct.shell} -> ${s.shell} (bash would read ~/.bashrc before the forced command)`, ...run("usermod", ["--shell", s.shell, s.user]) });
  const field = shadowField(s.user);
  // With UsePAM no, sshd treats a password field starting with '!' as a locked account and refuses
  // even its keys; '*' has no password either, and locks nothing else.
  const pamOff = ctx.sshd instanceof Map && ctx.sshd.get("usepam") === "no";
  if (!noPassword(field)) out.push({ what: `${s.user} has a password (or no shadow entry): a password login would bypass the forced command`, ...run("usermod", ["--password", "*", s.user]) });
  else if (pamOff && field!.startsWith("!")) out.push({ what: `${s.user}'s password field starts with '!' and sshd has UsePAM no: sshd would refuse the key`, ...run("usermod", ["--password", "*", s.user]) });

  const primary = lookupGroup(acct.gid);
  const others = [
    ...allUsers()
      .filter((u) => u.gid === acct.gid && u.name !== s.user)
      .map((u) => u.name),
    ...(primary?.members ?? []).filter((m) => m !== s.user),
  ];
  if (others.length)
    out.push({
      what: `group ${primary?.name ?? acct.gid} of ${s.user} also holds ${[...new Set(others)].join(", ")}: they could write into the backup root`,
      fix: `${shown([TOOLS.usermod, "--gid", "<a group of its own>", s.user])} (groupadd one first)`,
    });
  const extra = groupsOf(s.user).filter((g) => g !== acct.gid);
  if (extra.length)
    out.push({
      what: `${s.user} is also in group(s) ${extra.map((g) => lookupGroup(g)?.name ?? g).join(", ")}, which may give it more than its backup root`,
      ...run("usermod", ["--groups", "", s.user]),
    });
  return out;
}
