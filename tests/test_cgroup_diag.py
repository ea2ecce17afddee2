"""The per-cgroup C core (csrc/diag_cgroup.c) on real kernel replies.

Two cgroups under the cgroup2 mount, in a new network namespace: a server
in one (a listener and the connections it accepted), a client in the other
(its connected sockets, and TIME_WAIT sockets left by the connections it
closed first).  A plain inet_diag dump of the namespace goes through
fts_diag_cgroup_id() and fts_cgroup_add() (loaded with ctypes; the binding
into the extension comes with the shared counter core), and the tally is
checked: accepted sockets belong to the listener's cgroup, as in the
kernel; timewait sockets have no owner.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fasttcpstat import _cgroup

from .population import STATES
from .test_all_netns import start_lone_netns, stop, ss_in, _wait_for
from .test_c_core import CFLAGS, ROOT, _compiler
from .test_cgroup import CgroupTree

NSTATES = 16
KEPT, CLOSED = 3, 2

U64Counts = (ctypes.c_uint64 * NSTATES) * 2


class Slot(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("used", ctypes.c_int), ("n", U64Counts)]


class Tally(ctypes.Structure):
    _fields_ = [("slots", ctypes.POINTER(Slot)), ("capacity", ctypes.c_size_t),
                ("used", ctypes.c_size_t), ("unowned", U64Counts), ("overflow", U64Counts)]


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgcore") / "libdiagcgroup.so"
    subprocess.run([_compiler(), *CFLAGS, "-shared", "-fPIC", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "csrc" / "diag_cgroup.c"), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    lib.fts_diag_cgroup_id.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                       ctypes.POINTER(ctypes.c_uint64)]
    lib.fts_cgroup_tally_init.argtypes = [ctypes.POINTER(Tally), ctypes.POINTER(Slot),
                                          ctypes.c_size_t]
    lib.fts_cgroup_add.argtypes = [ctypes.POINTER(Tally), ctypes.c_int, ctypes.c_uint64,
                                   ctypes.c_int, ctypes.c_uint8]
    return lib


# Runs inside the namespace: every TCP socket's inet_diag payload, in hex.
DUMP = r"""
import json, socket, struct
out = []
for fam in (socket.AF_INET, socket.AF_INET6):
    req = struct.pack("=BBBxI48x", fam, socket.IPPROTO_TCP, 0, 0xFFE)
    msg = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:
        nl.sendto(msg, (0, 0))
        done = False
        while not done:
            data = nl.recv(1 << 16)
            at = 0
            while at + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, at)
                if kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                    done = True
                    break
                out.append(data[at + 16:at + length].hex())
                at += (length + 3) & ~3
print(json.dumps(out))
"""

SERVER = r"""
import socket, sys, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
kept = []
for _ in range({total}):
    conn, _ = srv.accept()
    if conn.recv(1):
        kept.append(conn)
    else:
        conn.close()    # the client closed first: it keeps the TIME_WAIT
time.sleep(600)
"""

CLIENT = r"""
import socket, sys, time
port = int(sys.argv[1])
kept = []
for _ in range({kept}):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"k")
    kept.append(c)
for _ in range({closed}):
    socket.create_connection(("127.0.0.1", port)).close()
print("ok", flush=True)
time.sleep(600)
"""


def _start_in(cgroup_dir: str, ns_path: str, script: str, *args: str) -> subprocess.Popen:
    """A Python process in `ns_path` that was moved into `cgroup_dir`
    before it made any socket (a socket's owner is fixed at creation)."""
    def enter() -> None:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, universal_newlines=True, preexec_fn=enter)


def _tally(core, payloads) -> Tally:
    slots = (Slot * 64)()
    tally = Tally()
    assert core.fts_cgroup_tally_init(ctypes.byref(tally), slots, 64) == 0
    tally._keep = slots  # the slots must outlive the tally
    for hexed in payloads:
        payload = bytes.fromhex(hexed)
        family = {2: 0, 10: 1}[payload[0]]
        state = payload[1]
        cgid = ctypes.c_uint64(0)
        found = core.fts_diag_cgroup_id(payload, len(payload), ctypes.byref(cgid))
        assert found in (0, 1)
        assert core.fts_cgroup_add(ctypes.byref(tally), found, cgid.value, family, state) == 0
    return tally


def _by_state(counts: U64Counts) -> dict:
    got = {STATES[s - 1]: counts[0][s] + counts[1][s] for s in range(1, len(STATES) + 1)}
    return {s: n for s, n in got.items() if n}


def test_sockets_by_owner_cgroup(require_netns, core):
    mount = _cgroup.find_cgroup2()
    assert mount is not None, "no cgroup2 mount"
    tree = CgroupTree(mount.path, f"issue12-{os.getpid()}-diag")
    procs = []
    lone = start_lone_netns()
    ns_path = f"/proc/{lone.pid}/ns/net"
    try:
        subprocess.run(["nsenter", f"--net={ns_path}", "ip", "link", "set", "lo", "up"],
                       check=True)
        server_cg = tree.make("server.service")
        client_cg = tree.make("client.service")
        server = _start_in(server_cg, ns_path, SERVER.format(total=KEPT + CLOSED))
        procs.append(server)
        port = server.stdout.readline().strip()
        client = _start_in(client_cg, ns_path, CLIENT.format(kept=KEPT, closed=CLOSED), port)
        procs.append(client)
        assert client.stdout.readline().strip() == "ok"
        expected = dict.fromkeys(STATES, 0)
        expected.update(LISTEN=1, ESTABLISHED=2 * KEPT, TIME_WAIT=CLOSED)
        _wait_for(lambda: ss_in(ns_path) == expected, "the sockets to settle")

        out = subprocess.run(["nsenter", f"--net={ns_path}", sys.executable, "-c", DUMP],
                             check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
        tally = _tally(core, json.loads(out))
        names = _cgroup.CgroupNames(mount)
        ids = [tally.slots[i].id for i in range(64) if tally.slots[i].used]
        paths = names.paths(ids)
        by_cgroup = {paths[tally.slots[i].id]: _by_state(tally.slots[i].n)
                     for i in range(64) if tally.slots[i].used}
        rel = lambda d: d[len(mount.path):]  # noqa: E731
        assert by_cgroup == {
            rel(server_cg): {"LISTEN": 1, "ESTABLISHED": KEPT},   # accepted: the listener's
            rel(client_cg): {"ESTABLISHED": KEPT},
        }
        assert _by_state(tally.unowned) == {"TIME_WAIT": CLOSED}
        assert _by_state(tally.overflow) == {}
        assert os.stat(server_cg).st_ino in ids
    finally:
        for proc in procs:
            stop(proc)
        stop(lone)
        tree.remove()
