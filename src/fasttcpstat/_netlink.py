"""The netlink backend: policy over the C extension's NetlinkCounter.

The C side only dumps and tallies; this module chooses the request form.
For both families the legacy TCPDIAG_GETSOCK request walks the kernel's
socket tables once instead of twice (about 0.8x the CPU of the
inet_diag_req_v2 pair at 1M sockets); kernels that refuse it get the pair.
"""
from __future__ import annotations

import errno

from ._backend import Backend, Tally
from ._states import FAMILY_BOTH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from ._fasttcpstat import NetlinkCounter
    from ._netns import Netns
    from ._query import CountQuery

REQUEST_FORMS = ("auto", "v2", "legacy")

# What a kernel without the compat request answers (no handler, or the
# message type unknown to it).
_LEGACY_REFUSALS = frozenset({errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP})

try:
    from . import _fasttcpstat
except ImportError as exc:  # a source install without a compiler
    _fasttcpstat = None  # type: ignore[assignment]
    from ._extension import import_error

    IMPORT_ERROR: Optional[ImportError] = import_error(exc)
else:
    IMPORT_ERROR = None


def import_threading() -> None:
    """Every count of the extension asks threading.main_thread() whether it
    may poll signals (csrc/bind_core.c).  Backends import it when they are
    set up rather than at the first count, which may come after a chroot
    or a privilege drop that leaves the standard library unreadable; not
    at `import fasttcpstat`, where it would cost more than the rest of the
    package (functools and collections come with it)."""
    import threading  # noqa: F401

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


class NetlinkBackend(Backend):
    """Counts through one NETLINK_SOCK_DIAG socket, reused for every count.

    The socket counts the network namespace of the thread that created it.
    """

    name = "netlink"
    per_cgroup = True

    def __init__(self, request: str = "auto", netns: Optional[Netns] = None) -> None:
        check_request(request)
        if _fasttcpstat is None:
            raise ImportError(
                "the netlink backend needs fasttcpstat's C extension, which is "
                f"not built here ({IMPORT_ERROR}); reinstall with a C compiler "
                "or use backend='procfs'"
            )
        import_threading()
        self.request = request
        self._netns = netns
        self._counter = self._open()

    def _open(self) -> NetlinkCounter:
        if self._netns is None:
            return _fasttcpstat.NetlinkCounter()
        # Opened from inside the other namespace; the C side must then
        # never reopen it from the counting thread, which is not there.
        return self._netns.run_inside(lambda: _fasttcpstat.NetlinkCounter(reopen=False))

    def count(self, query: CountQuery) -> Tally:
        global _legacy_refused
        if self._netns is not None and self._counter.needs_reopen:
            # Lost to fork() or an interrupted dump: back to the namespace.
            self._counter.close()
            self._counter = self._open()
        use_legacy = self.request == "legacy" or (
            self.request == "auto" and query.families == FAMILY_BOTH and not _legacy_refused
        )
        if use_legacy:
            try:
                return self._dump(query, _fasttcpstat.FORM_LEGACY)
            except OSError as exc:
                if self.request == "legacy" or exc.errno not in _LEGACY_REFUSALS:
                    raise
                _legacy_refused = True
        return self._dump(query, _fasttcpstat.FORM_V2)

    def _dump(self, query: CountQuery, form: int) -> Tally:
        result = self._counter.count(
            query.families, query.mask, form, local=query.local or (),
            remote=query.remote or (), by_port=query.by_port, by_remote=query.by_remote,
            by_cgroup=query.by_cgroup)
        if query.by_cgroup:
            (v4, v6), per_cgroup = result
            return Tally(v4, v6, per_cgroup=per_cgroup)
        if not query.by_port:
            v4, v6 = result
            return Tally(v4, v6)
        (v4, v6), per_port = result
        return Tally(v4, v6, per_port)

    def close(self) -> None:
        self._counter.close()
