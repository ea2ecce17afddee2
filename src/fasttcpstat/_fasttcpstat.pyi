"""Type stubs for the C extension (csrc/_fasttcpstat.c)."""
from typing import Tuple

FAMILY_IPV4: int
FAMILY_IPV6: int
STATES_ALL: int
FORM_V2: int
FORM_LEGACY: int
RECV_BUFSIZE: int

class NetlinkCounter:
    def __init__(self) -> None: ...
    def count(self, families: int, states: int, form: int, /) -> Tuple[Tuple[int, ...], Tuple[int, ...]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
