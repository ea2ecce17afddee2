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


class Btf:
    """A BTF blob built type by type (ids from 1).  `drop` renames one
    string, so that a needed type or member goes missing."""

    def __init__(self, drop: str = "") -> None:
        self.drop = drop
        self.strs = [b""]
        self.types = []

    def name(self, text: str) -> int:
        if not text:
            return 0
        if text == self.drop:
            text = "x" + text[1:]
        off = sum(len(x) + 1 for x in self.strs)
        self.strs.append(text.encode())
        return off

    def typ(self, nm: str, kind: int, vlen: int = 0, kflag: int = 0, size_or_type: int = 0,
            extra: bytes = b"") -> int:
        self.types.append(struct.pack("<III", self.name(nm),
                                      (kind << 24) | vlen | (kflag << 31), size_or_type) + extra)
        return len(self.types)

    def members(self, *ms) -> bytes:
        return b"".join(struct.pack("<III", self.name(n), t, bits) for n, t, bits in ms)

    def struct(self, nm: str, size: int, *ms, kind: int = 4) -> int:
        """A struct (kind 4) or union (5) of (name, type, bit offset)."""
        return self.typ(nm, kind, len(ms), 0, size, self.members(*ms))

    def int(self, nm: str, size: int) -> int:
        return self.typ(nm, 1, size_or_type=size, extra=struct.pack("<I", 8 * size))

    def ptr(self, target: int) -> int:
        return self.typ("", 2, size_or_type=target)

    def blob(self) -> bytes:
        type_sec = b"".join(self.types)
        str_sec = b"".join(x + b"\0" for x in self.strs)
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(type_sec), len(type_sec),
                             len(str_sec))
        return header + type_sec + str_sec


def btf_blob(drop: str = "", self_copies: int = 0) -> bytes:
    """A small BTF blob with the types the iterator needs, shaped like the
    kernel's (anonymous union, embedded struct, typedef, bitfield-encoded
    offsets), at offsets no real kernel uses.  `drop` renames one string.
    With `self_copies`, struct sock_common holds that many members of its
    own type instead (a reader recursing into each took N^8 steps)."""
    b = Btf(drop)
    typ, members = b.typ, b.members
    u8 = b.int("unsigned char", 1)
    u16 = b.int("short unsigned int", 2)
    u64 = b.int("long long unsigned int", 8)
    vu8 = typ("", 9, size_or_type=u8)
    be16 = typ("__be16", 8, size_or_type=u16)
    seqf = typ("seq_file", 4, size_or_type=0)
    pseq = b.ptr(seqf)
    meta = typ("bpf_iter_meta", 4, 2, 0, 16, members(("seq", pseq, 0), ("session_id", u64, 64)))
    ports = typ("", 4, 2, 0, 4, members(("skc_dport", be16, 0), ("skc_num", u16, 16)))
    uni = typ("", 5, 2, 0, 8, members(("skc_portpair", u64, 0), ("", ports, 0)))
    if self_copies:
        skc = len(b.types) + 1
        typ("sock_common", 4, self_copies, 0, 8 * self_copies,
            members(*(("c", skc, 64 * i) for i in range(self_copies))))
    else:
        skc = typ("sock_common", 4, 3, 1, 64, members(("", uni, 320), ("skc_family", u16, 384),
                                                      ("skc_state", vu8, 400)))
    itw = typ("inet_timewait_sock", 4, 2, 0, 64, members(("__tw_common", skc, 0),
                                                          ("tw_substate", u8, 480)))
    typ("tcp_timewait_sock", 4, 1, 0, 96, members(("tw_sk", itw, 0)))
    pmeta = b.ptr(meta)
    pskc = b.ptr(skc)
    proto = typ("", 13, 3, 0, 0, struct.pack("<IIIIII", b.name("meta"), pmeta,
                                             b.name("sk_common"), pskc, b.name("uid"), u16))
    typ("bpf_iter_tcp", 12, size_or_type=proto)
    return b.blob()


def walk_btf_blob(drop: str = "", anonymous_copies: int = 0) -> bytes:
    """The types, members and kfuncs the walk program is built from
    (csrc/btf_walk.c), nested as in the kernel (embedded structs, anonymous
    unions, a typedef, a volatile) at offsets no real kernel uses.  With
    `anonymous_copies`, sock_common also holds that many anonymous members
    of its own type (a search without its entered-once bound: N^8 steps)."""
    b = Btf(drop)
    u8 = b.int("unsigned char", 1)
    u16 = b.int("short unsigned int", 2)
    u32 = b.int("unsigned int", 4)
    u64 = b.int("long long unsigned int", 8)
    vu8 = b.typ("", 9, size_or_type=u8)
    be16 = b.typ("__be16", 8, size_or_type=u16)
    proto = b.typ("", 13)
    for kfunc in ("bpf_rcu_read_lock", "bpf_rcu_read_unlock", "bpf_rdonly_cast"):
        b.typ(kfunc, 12, size_or_type=proto)
    node = b.struct("hlist_nulls_node", 16)  # members below: it points to itself
    pnode = b.ptr(node)
    b.types[node - 1] = struct.pack("<III", b.name("hlist_nulls_node"), (4 << 24) | 2, 16) \
        + b.members(("next", pnode, 0), ("pprev", b.ptr(pnode), 64))
    head = b.struct("hlist_nulls_head", 8, ("first", pnode, 0))
    ehb = b.struct("inet_ehash_bucket", 8, ("chain", head, 0))
    lhb = b.struct("inet_listen_hashbucket", 24, ("lock", u64, 0), ("nulls_head", head, 128))
    hashinfo = b.struct("inet_hashinfo", 96, ("ehash", b.ptr(ehb), 0), ("ehash_locks", u64, 64),
                        ("ehash_mask", u32, 128), ("lhash2_mask", u32, 160),
                        ("lhash2", b.ptr(lhb), 320))
    death_row = b.struct("inet_timewait_death_row", 24, ("tw_refcount", u32, 0),
                         ("hashinfo", b.ptr(hashinfo), 64))
    ipv4 = b.struct("netns_ipv4", 512, ("sysctl", u32, 0), ("tcp_death_row", death_row, 1024))
    ns = b.struct("ns_common", 24, ("stashed", u64, 0), ("inum", u32, 128))
    net = b.struct("net", 2048, ("refcount", u32, 0), ("ns", ns, 192), ("ipv4", ipv4, 4096))
    possible = b.struct("possible_net_t", 8, ("net", b.ptr(net), 0))
    ports = b.struct("", 4, ("skc_dport", be16, 0), ("skc_num", u16, 16))
    portpair = b.struct("", 4, ("skc_portpair", u32, 0), ("", ports, 0), kind=5)
    nodes = b.struct("", 16, ("skc_node", u64, 0), ("skc_nulls_node", node, 0), kind=5)
    own = [("", len(b.types) + 1, 0)] * anonymous_copies
    skc = b.struct("sock_common", 136, ("skc_hash", u32, 0), ("", portpair, 96),
                   ("skc_family", u16, 128), ("skc_state", vu8, 144), ("skc_net", possible, 320),
                   ("", nodes, 512), *own)
    b.struct("inet_timewait_sock", 200, ("__tw_common", skc, 0), ("tw_mark", u32, 1088),
             ("tw_substate", u8, 1160))
    nsproxy = b.struct("nsproxy", 64, ("count", u64, 0), ("net_ns", b.ptr(net), 320))
    b.struct("task_struct", 4096, ("state", u64, 0), ("nsproxy", b.ptr(nsproxy), 12288))
    return b.blob()


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


def walkprog_seeds() -> dict:
    """fuzz/fuzz_walkprog.c: byte 0 even, the generator (an 80-byte layout,
    nslots, room, local and remote range counts, state mask, ranges); odd,
    the layout's BTF queries over a blob."""
    layout = bytes(range(1, 81))

    def generator(nslots_log: int, room: int, nlocal: int, nremote: int, states: int,
                  pairs=()) -> bytes:
        return (b"\0" + layout + bytes([nslots_log]) + struct.pack("<H", room)
                + bytes([nlocal, nremote]) + struct.pack("<I", states) + ranges(pairs))

    blob = walk_btf_blob()
    return {
        "gen_plain": generator(10, 1000, 0, 0, 0),
        "gen_one_slot": generator(0, 1000, 0, 0, 0x7FE),
        "gen_two_ranges": generator(6, 330, 1, 1, 0x7FE, [(10000, 10016), (80, 80)]),
        "gen_many_ranges": generator(12, 4000, 20, 20, 0x402,
                                     [(i * 1000, i * 1000 + 9) for i in range(40)]),
        "gen_low_gt_high": generator(4, 500, 1, 0, 0, [(9, 3)]),
        "gen_too_many_slots": generator(13, 1000, 0, 0, 0),
        "gen_little_room": generator(3, 20, 0, 0, 0),
        "layout": b"\1" + blob,
        "layout_missing_kfunc": b"\1" + walk_btf_blob(drop="bpf_rdonly_cast"),
        "layout_missing_member": b"\1" + walk_btf_blob(drop="tcp_death_row"),
        "layout_missing_struct": b"\1" + walk_btf_blob(drop="inet_listen_hashbucket"),
        "layout_truncated": b"\1" + blob[: len(blob) * 2 // 3],
        "layout_self_embedding_12": b"\1" + walk_btf_blob(drop="skc_num", anonymous_copies=12),
    }


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds")
    for target, seeds in (("fuzz_walk", walk_seeds()), ("fuzz_filter", filter_seeds()),
                          ("fuzz_btf", btf_seeds()), ("fuzz_walkprog", walkprog_seeds())):
        folder = os.path.join(out, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{len(seeds)} seeds in {folder}")


if __name__ == "__main__":
    main()
