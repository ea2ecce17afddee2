"""The netlink backend: policy over the C extension's NetlinkCounter.

The C side only dumps and tallies; this module chooses the request form.
For both families the legacy TCPDIAG_GETSOCK request walks the kernel's
socket tables once instead of twice (about 0.8x the CPU of the
inet_diag_req_v2 pair at 1M sockets); kernels that refuse it get the pair.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from ._extension import import_error
from ._ports import Range
from ._states import FAMILY_BOTH

if TYPE_CHECKING:
    from ._netns import Netns

REQUEST_FORMS = ("auto", "v2", "legacy")

# What a kernel without the compat request answers (no handler, or the
# message type unknown to it).
_LEGACY_REFUSALS = frozenset({errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP})

try:
    from . import _fasttcpstat
except ImportError as exc:  # a source install without a compiler
    _fasttcpstat = None  # type: ignore[assignment]
    IMPORT_ERROR: "ImportError | None" = import_error(exc)
else:
    IMPORT_ERROR = None

# Once a kernel refused the legacy form, later counters skip the attempt.
_legacy_refused = False


def check_request(request: object) -> str:
    """Validate Counter's `request` argument."""
    allowed = ", ".join(map(repr, REQUEST_FORMS))
    if not isinstance(request, str):
        raise TypeError(f"request must be one of {allowed}, not {type(request).__name__}")
    if request not in REQUEST_FORMS:
        raise ValueError(f"request must be one of {allowed}, not {request!r}")
    return request


class NetlinkBackend:
    """Counts through one NETLINK_SOCK_DIAG socket, reused for every count.

    The socket counts the network namespace of the thread that created it.
    """

    name = "netlink"

    def __init__(self, request: str = "auto", netns: "Optional[Netns]" = None) -> None:
        check_request(request)
        if _fasttcpstat is None:
            raise ImportError(
                "the netlink backend needs fasttcpstat's C extension, which is "
                f"not built here ({IMPORT_ERROR}); reinstall with a C compiler "
                "or use backend='procfs'"
            )
        self.request = request
        self._netns = netns
        self._counter = self._open()

    def _open(self) -> Any:
        if self._netns is None:
            return _fasttcpstat.NetlinkCounter()
        # Opened from inside the other namespace; the C side must then
        # never reopen it from the counting thread, which is not there.
        return self._netns.run_inside(lambda: _fasttcpstat.NetlinkCounter(reopen=False))

    def count(self, families: int, states_mask: int,
              local: Optional[List[Range]] = None, remote: Optional[List[Range]] = None,
              by_port: Sequence[int] = (), by_remote: bool = False) -> Any:
        """Raw tallies: (ipv4, ipv6), or ((ipv4, ipv6), per_port) with by_port."""
        global _legacy_refused
        if self._netns is not None and self._counter.needs_reopen:
            # Lost to fork() or an interrupted dump: back to the namespace.
            self._counter.close()
            self._counter = self._open()
        options = {"local": local or (), "remote": remote or (),
                   "by_port": by_port, "by_remote": by_remote}
        use_legacy = self.request == "legacy" or (
            self.request == "auto" and families == FAMILY_BOTH and not _legacy_refused
        )
        if use_legacy:
            try:
                return self._counter.count(families, states_mask,
                                           _fasttcpstat.FORM_LEGACY, **options)
            except OSError as exc:
                if self.request == "legacy" or exc.errno not in _LEGACY_REFUSALS:
                    raise
                _legacy_refused = True
        return self._counter.count(families, states_mask, _fasttcpstat.FORM_V2, **options)

    def close(self) -> None:
        self._counter.close()
