#!/usr/bin/python3
# paramiko's SFTPClient over a socketpair to a server process (no SSH transport): what duplicity's
# paramiko backend sends, minus the encryption. Run with Debian's /usr/bin/python3 (python3-paramiko).
#
#   paramiko-sftp.py '<json list of steps>' -- server argv...
#
# Each step is [op, args...]; ops: chdir, getcwd, normalize, stat, lstat, listdir, mkdir, put, get,
# remove, rename, posix_rename, chmod. Prints one JSON line: a result per step, {"ok": value} or
# {"error": message, "errno": n}. A failing step does not stop the ones after it.
import json
import socket
import subprocess
import sys

import paramiko


def attrs(a):
    return {"size": a.st_size, "mode": a.st_mode, "uid": a.st_uid, "gid": a.st_gid, "mtime": a.st_mtime}


OPS = {
    "chdir": lambda c, p: c.chdir(p),
    "getcwd": lambda c: c.getcwd(),
    "normalize": lambda c, p: c.normalize(p),
    "stat": lambda c, p: attrs(c.stat(p)),
    "lstat": lambda c, p: attrs(c.lstat(p)),
    "listdir": lambda c, p=".": sorted(c.listdir(p)),
    "mkdir": lambda c, p: c.mkdir(p),
    "put": lambda c, local, remote: attrs(c.put(local, remote)),
    "get": lambda c, remote, local: c.get(remote, local),
    "remove": lambda c, p: c.remove(p),
    "rename": lambda c, a, b: c.rename(a, b),
    "posix_rename": lambda c, a, b: c.posix_rename(a, b),
    "chmod": lambda c, p, m: c.chmod(p, m),
}


class Pipe:
    """The socket end, with the one Channel method SFTPClient asks for besides send and recv."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        return self.sock.send(data)

    def recv(self, n):
        return self.sock.recv(n)

    def close(self):
        self.sock.close()

    def get_name(self):
        return "validate-backup"


def main():
    steps = json.loads(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(argv, stdin=theirs, stdout=theirs)
    theirs.close()
    results = []
    try:
        client = paramiko.SFTPClient(Pipe(ours))
        for op, *args in steps:
            try:
                results.append({"ok": OPS[op](client, *args)})
            except (IOError, OSError, paramiko.SFTPError) as e:
                results.append({"error": str(e), "errno": getattr(e, "errno", None)})
        client.close()
    finally:
        ours.close()
        code = proc.wait(timeout=60)
    print(json.dumps({"results": results, "exit": code}))


main()
