"""Type stubs for the C extension (csrc/_fasttcpstat.c)."""
from typing import Sequence, Tuple, Union

FAMILY_IPV4: int
FAMILY_IPV6: int
STATES_ALL: int
FORM_V2: int
FORM_LEGACY: int
RECV_BUFSIZE: int
MAX_PORT_RANGES: int
MAX_BY_PORT: int

# (ipv4, ipv6): counts indexed by the kernel's TCP state number.
_Tallies = Tuple[Tuple[int, ...], Tuple[int, ...]]

class NetlinkCounter:
    def __init__(self, *, reopen: bool = True) -> None: ...
    def count(
        self,
        families: int,
        states: int,
        form: int,
        local: Sequence[Tuple[int, int]] = (),
        remote: Sequence[Tuple[int, int]] = (),
        by_port: Sequence[int] = (),
        by_remote: bool = False,
    ) -> Union[_Tallies, Tuple[_Tallies, Tuple[_Tallies, ...]]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def needs_reopen(self) -> bool: ...
