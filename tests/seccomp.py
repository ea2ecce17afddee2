"""Make the kernel refuse system calls in this process, for fallback tests.

`deny(...)` installs a seccomp filter (classic BPF) that fails the chosen
calls with an errno, the way a container runtime's policy would.  It is
irreversible: call it in a child process only.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import platform
import struct

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06

# seccomp_data: nr at 0, arch at 4, args[0] at 16 (low word, little endian)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16

_ARCH = {
    # machine: (AUDIT_ARCH_*, {syscall name: number})
    "x86_64": (0xC000003E, {"socket": 41, "sendto": 44, "sendmsg": 46, "recvmsg": 47,
                            "bpf": 321}),
    "aarch64": (0xC00000B7, {"socket": 198, "sendto": 206, "sendmsg": 211, "recvmsg": 212,
                             "bpf": 280}),
}


def supported() -> bool:
    return platform.machine() in _ARCH


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def deny(syscall: str, err: int = errno_mod.EPERM, arg0: "int | None" = None) -> None:
    """Fail `syscall` with `err` (only when its first argument is `arg0`,
    if given) in this process and its future children."""
    audit_arch, numbers = _ARCH[platform.machine()]
    ret_errno = SECCOMP_RET_ERRNO | (err & 0xFFFF)
    prog = [
        _insn(BPF_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(BPF_JEQ_K, 0, 5 if arg0 is not None else 3, audit_arch),
        _insn(BPF_LD_W_ABS, 0, 0, _OFF_NR),
        _insn(BPF_JEQ_K, 0, 3 if arg0 is not None else 1, numbers[syscall]),
    ]
    if arg0 is not None:
        prog += [
            _insn(BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
            _insn(BPF_JEQ_K, 0, 1, arg0),
        ]
    prog += [
        _insn(BPF_RET_K, 0, 0, ret_errno),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    code = b"".join(prog)
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
