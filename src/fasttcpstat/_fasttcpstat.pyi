"""Type stubs for the C extension (csrc/_fasttcpstat.c)."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The one source of the numbers Python shares with C (csrc/diag.h,
# csrc/bpf_abi.h); tests/test_constants.py ties Python's copies to them.
FAMILY_IPV4: int
FAMILY_IPV6: int
FAMILY_BOTH: int
NSTATES: int  # tallies have NSTATES entries, indexed by state number
ALL_STATES_MASK: int
STATES_ALL: int  # the same as ALL_STATES_MASK
FORM_V2: int
FORM_LEGACY: int
RECV_BUFSIZE: int

MAX_PORT_RANGES: int
MAX_BY_PORT: int
MAX_BY_CGROUP: int
BPF_EMIT_SHIFT: int
BPF_MAP_TYPE_ARRAY: int
BPF_MAP_TYPE_LRU_HASH: int

Tally = Tuple[Tuple[int, ...], Tuple[int, ...]]
Ranges = Sequence[Tuple[int, int]]

class NetlinkCounter:
    def __init__(self, *, reopen: bool = ...) -> None: ...
    def count(
        self,
        families: int,
        states: int,
        form: int,
        local: Ranges = ...,
        remote: Ranges = ...,
        by_port: Sequence[int] = ...,
        by_remote: bool = ...,
        by_cgroup: int = ...,
    ) -> Any: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def needs_reopen(self) -> bool: ...

class BpfCounter:
    def __init__(
        self,
        layout: Tuple[int, ...],
        *,
        local: Ranges = ...,
        remote: Ranges = ...,
        emit_shift: int = ...,
        by_cgroup: int = ...,
        cgroup_layout: Optional[Tuple[int, ...]] = ...,
    ) -> None: ...
    def create_iter(self) -> int: ...
    # (Tally, output bytes); with by_cgroup, ((Tally, per_cgroup), output bytes)
    def run(self, iter_fd: int, families: int = ..., /) -> Tuple[Any, int]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

class WalkCounter:
    def __init__(
        self,
        layout: Tuple[int, ...],
        *,
        states: int = ...,
        local: Ranges = ...,
        remote: Ranges = ...,
        slots: int = ...,
    ) -> None: ...
    def walk(
        self, only_inum: int = ..., tables: int = ..., budget: int = ...
    ) -> Tuple[Dict[int, Tally], Dict[str, int]]: ...
    def walk_passes(
        self, jobs: Sequence[Tuple[int, int, int]], budget: int = ...
    ) -> Tuple[Dict[int, Tally], List[Dict[str, int]]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def insns(self) -> int: ...

def btf_layout(path: Optional[str] = ...) -> Tuple[int, ...]: ...
def btf_cgroup_layout(path: Optional[str] = ...) -> Tuple[int, ...]: ...
def walk_layout(path: Optional[str] = ...) -> Tuple[int, ...]: ...
def bpf_pin(layout: Tuple[int, ...], path: str, emit_shift: int = ...) -> None: ...
