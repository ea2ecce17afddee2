#!/usr/bin/env python3
"""Write seed inputs for the fuzz targets into fuzz/seeds/<target>/.

The seeds start the fuzzer from inputs shaped like the real thing (a
multi-message dump with the right sequence number and port id, DONE with and
without a code, NLMSG_ERROR, an unpadded last message; filters of every
size class).  fuzz/run.sh --merge minimizes seeds plus whatever the fuzzer
found into fuzz/corpus/<target>/, which is what the repository keeps.
"""
from __future__ import annotations

import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK = 20, 18
NLM_F_MULTI, NLM_F_DUMP_INTR = 0x2, 0x10
AF_INET, AF_INET6 = 2, 10
SEQ, PORTID = 7, 4242
INET_DIAG_MSG_LEN = 72


def walk_prefix(opts: int, seq: int = SEQ, portid: int = PORTID, port: int = 443,
                nports: int = 0) -> bytes:
    return struct.pack("<BII", opts, seq, portid) + struct.pack(">H", port) + bytes([nports])


def message(kind: int, payload: bytes, *, flags: int = NLM_F_MULTI, seq: int = SEQ,
            portid: int = PORTID, pad: bool = True) -> bytes:
    head = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, portid)
    data = head + payload
    if pad:
        data += b"\0" * (-len(data) % 4)
    return data


def diag_msg(family: int, state: int, sport: int = 443, dport: int = 50000) -> bytes:
    body = bytearray(INET_DIAG_MSG_LEN)
    body[0], body[1] = family, state
    body[4:6] = struct.pack(">H", sport)
    body[6:8] = struct.pack(">H", dport)
    return bytes(body)


def sockets(rng: random.Random, n: int, kind: int = SOCK_DIAG_BY_FAMILY) -> bytes:
    return b"".join(
        message(kind, diag_msg(rng.choice((AF_INET, AF_INET6)), rng.randint(1, 11),
                               rng.choice((443, 8443, 22, rng.randint(0, 65535))),
                               rng.randint(0, 65535)))
        for _ in range(n)
    )


def walk_seeds() -> dict:
    rng = random.Random(7)
    done0 = message(NLMSG_DONE, struct.pack("=i", 0))
    seeds = {
        "dump_done": walk_prefix(0) + sockets(rng, 5) + done0,
        "dump_more": walk_prefix(0) + sockets(rng, 40),
        "legacy_v4_only": walk_prefix(1 << 2) + sockets(rng, 6, TCPDIAG_GETSOCK) + done0,
        "by_port_local": walk_prefix(2, port=443, nports=3) + sockets(rng, 8) + done0,
        "by_port_remote": walk_prefix(3 | (2 << 2), port=50000, nports=0) + sockets(rng, 8),
        "unaligned": walk_prefix(3 << 4) + sockets(rng, 3) + done0,
        "done_no_payload": walk_prefix(0) + message(NLMSG_DONE, b""),
        "done_short": walk_prefix(0) + message(NLMSG_DONE, b"\1\0", pad=False),
        "done_error": walk_prefix(0) + message(NLMSG_DONE, struct.pack("=i", -13)),
        "error_einval": walk_prefix(0) + message(NLMSG_ERROR, struct.pack("=i", -22) + b"\0" * 16),
        "error_ack": walk_prefix(0) + message(NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16),
        "overrun": walk_prefix(0) + message(NLMSG_OVERRUN, b""),
        "noop_then_socket": walk_prefix(0) + message(NLMSG_NOOP, b"") + sockets(rng, 1),
        "dump_intr": walk_prefix(0) + message(SOCK_DIAG_BY_FAMILY, diag_msg(AF_INET, 1),
                                              flags=NLM_F_MULTI | NLM_F_DUMP_INTR),
        "unpadded_last": walk_prefix(0) + sockets(rng, 2)
        + message(SOCK_DIAG_BY_FAMILY, diag_msg(AF_INET, 2) + b"\x01", pad=False),
        "wrong_seq": walk_prefix(0, seq=8) + sockets(rng, 2),
        "wrong_portid": walk_prefix(0, portid=1) + sockets(rng, 2),
        "truncated_header": walk_prefix(0) + sockets(rng, 1)[:10],
        "len_zero": walk_prefix(0) + b"\0" * 20,
        "len_huge": walk_prefix(0) + b"\xff\xff\xff\xff" + sockets(rng, 1)[4:],
        "bad_family": walk_prefix(0) + message(SOCK_DIAG_BY_FAMILY, diag_msg(1, 1)),
        "bad_state": walk_prefix(0) + message(SOCK_DIAG_BY_FAMILY, diag_msg(AF_INET, 16)),
        "short_diag_msg": walk_prefix(0) + message(SOCK_DIAG_BY_FAMILY, b"\2\1\0\0"),
        "full_chunk": walk_prefix(2, nports=255) + sockets(rng, 370),
    }
    return seeds


def ranges(pairs) -> bytes:
    return b"".join(struct.pack("<HH", low, high) for low, high in pairs)


def filter_prefix(opts: int, cap: int = 0, tile_local: int = 0, tile_remote: int = 0,
                  nlocal: int = 0, states: int = 0xFFE, seq: int = 1) -> bytes:
    if opts & 4:
        split = struct.pack("<HH", tile_local, tile_remote)
    else:
        split = struct.pack("<HH", 0, nlocal)[:2] + bytes([nlocal, 0])
    return (bytes([opts]) + struct.pack("<H", cap) + split
            + struct.pack("<HH", states, seq))


def filter_seeds() -> dict:
    rng = random.Random(11)
    many = [(p, p) for p in rng.sample(range(65536), 40)]
    return {
        "https_local": filter_prefix(8, nlocal=2) + ranges([(443, 443), (8443, 8443)]),
        "https_remote": filter_prefix(8 | 16, nlocal=0) + ranges([(443, 443), (8443, 8443)]),
        "both_sides": filter_prefix(3 | 8, nlocal=1) + ranges([(1024, 65535), (5432, 5432)]),
        "full_range": filter_prefix(0, nlocal=1) + ranges([(0, 65535)]),
        "zero_port": filter_prefix(0, nlocal=1) + ranges([(0, 0), (65535, 65535)]),
        "low_gt_high": filter_prefix(0, nlocal=1) + ranges([(10, 9)]),
        "cap_short": filter_prefix(1, nlocal=2) + ranges([(1, 2), (3, 4)]),
        "cap_given": filter_prefix(2, cap=30, nlocal=1) + ranges([(1, 2), (3, 4)]),
        "many_singles": filter_prefix(8, nlocal=20) + ranges(many),
        "tile_max": filter_prefix(4, tile_local=2048) + ranges([(80, 80), (1000, 2000)]),
        "tile_split": filter_prefix(4 | 8, tile_local=1024, tile_remote=1024) + ranges([(5, 7)]),
        "tile_over": filter_prefix(4, tile_local=2048, tile_remote=1) + ranges([(5, 7)]),
        "empty": filter_prefix(8),
    }


def btf_blob(drop: str = "", self_copies: int = 0) -> bytes:
    """A small BTF blob with the types the iterator needs, shaped like the
    kernel's (anonymous union, embedded struct, typedef, bitfield-encoded
    offsets), at offsets no real kernel uses.  `drop` renames one string.
    With `self_copies`, struct sock_common holds that many members of its
    own type instead (a reader recursing into each took N^8 steps)."""
    strs = [b""]
    types = []

    def name(text):
        if not text:
            return 0
        if text == drop:
            text = "x" + text[1:]
        off = sum(len(x) + 1 for x in strs)
        strs.append(text.encode())
        return off

    def typ(nm, kind, vlen=0, kflag=0, size_or_type=0, extra=b""):
        types.append(struct.pack("<III", name(nm), (kind << 24) | vlen | (kflag << 31),
                                 size_or_type) + extra)
        return len(types)

    def members(*ms):
        return b"".join(struct.pack("<III", name(n), t, bits) for n, t, bits in ms)

    u8 = typ("unsigned char", 1, size_or_type=1, extra=struct.pack("<I", 8))
    u16 = typ("short unsigned int", 1, size_or_type=2, extra=struct.pack("<I", 16))
    u64 = typ("long long unsigned int", 1, size_or_type=8, extra=struct.pack("<I", 64))
    vu8 = typ("", 9, size_or_type=u8)
    be16 = typ("__be16", 8, size_or_type=u16)
    seqf = typ("seq_file", 4, size_or_type=0)
    pseq = typ("", 2, size_or_type=seqf)
    meta = typ("bpf_iter_meta", 4, 2, 0, 16, members(("seq", pseq, 0), ("session_id", u64, 64)))
    ports = typ("", 4, 2, 0, 4, members(("skc_dport", be16, 0), ("skc_num", u16, 16)))
    uni = typ("", 5, 2, 0, 8, members(("skc_portpair", u64, 0), ("", ports, 0)))
    if self_copies:
        skc = len(types) + 1
        typ("sock_common", 4, self_copies, 0, 8 * self_copies,
            members(*(("c", skc, 64 * i) for i in range(self_copies))))
    else:
        skc = typ("sock_common", 4, 3, 1, 64, members(("", uni, 320), ("skc_family", u16, 384),
                                                      ("skc_state", vu8, 400)))
    itw = typ("inet_timewait_sock", 4, 2, 0, 64, members(("__tw_common", skc, 0),
                                                          ("tw_substate", u8, 480)))
    typ("tcp_timewait_sock", 4, 1, 0, 96, members(("tw_sk", itw, 0)))
    pmeta = typ("", 2, size_or_type=meta)
    pskc = typ("", 2, size_or_type=skc)
    proto = typ("", 13, 3, 0, 0, struct.pack("<IIIIII", name("meta"), pmeta,
                                             name("sk_common"), pskc, name("uid"), u16))
    typ("bpf_iter_tcp", 12, size_or_type=proto)
    type_sec = b"".join(types)
    str_sec = b"".join(x + b"\0" for x in strs)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(type_sec), len(type_sec),
                         len(str_sec))
    return header + type_sec + str_sec


def btf_seeds() -> dict:
    blob = btf_blob()
    return {
        "layout": blob,
        "missing_member": btf_blob(drop="tw_substate"),
        "missing_func": btf_blob(drop="bpf_iter_tcp"),
        "truncated": blob[: len(blob) // 2],
        "header_only": blob[:24],
        "self_embedding_12": btf_blob(self_copies=12),
    }


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds")
    for target, seeds in (("fuzz_walk", walk_seeds()), ("fuzz_filter", filter_seeds()),
                          ("fuzz_btf", btf_seeds())):
        folder = os.path.join(out, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{len(seeds)} seeds in {folder}")


if __name__ == "__main__":
    main()
