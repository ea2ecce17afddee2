"""The package's one kind of lock: released again in a child of fork().

fork() copies a lock in the state it has at that instant.  A lock that
another thread holds (a count picking its backend, a program being
loaded) stays held in the child, where that thread does not exist, and
the child's first count would wait for it forever.  Every ForkSafeLock
made before the fork is replaced by a fresh one in the child, at its first
use there (os.register_at_fork() tells the child it is one).

The C types' locks (csrc/bind_core.c) solve the same problem their own
way: they notice the pid has changed, which they check and act on
atomically under the GIL.  Python code can be interrupted between the
check and the replacement, hence the generation and _renewal here.

What the vanished thread was doing under the lock is not finished in the
child: at worst a backend it had taken is never closed there, which
costs the child a few descriptors, never a wrong count.
"""

from __future__ import annotations

import _thread
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Bumped in each child of fork(); a lock made in an older generation is
# replaced at its next use.  Renewals take _renewal, which the fork
# handler replaces at once (a module's global is in reach; the locks of
# live objects are not, without weak references, whose import costs more
# than the whole package's).
_generation = 0
_renewal = _thread.allocate_lock()


class ForkSafeLock:
    """A non-reentrant lock, held with ``with lock():``.

    Calling it gives the lock to hold: a plain _thread lock, replaced
    first in a child of fork().  ``with`` then acquires it in C, which a
    KeyboardInterrupt cannot separate from the with-block.  A Python
    ``__enter__`` could be interrupted right after acquiring (the
    interpreter runs signal handlers after each call returns): the
    exception left the lock held, and the count's own clean-up then waited
    for it forever (a one-shot command hung after Ctrl-C, once in ~4 CI
    runs of tests/test_cli_first_hour.py).
    """

    __slots__ = ("_lock", "_generation")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._generation = _generation

    def __call__(self) -> Any:
        if self._generation != _generation:
            self._renew()
        return self._lock

    def _renew(self) -> None:
        # Under _renewal, so that two threads of the child that see the
        # old generation at once end up sharing one new lock.
        with _renewal:
            if self._generation != _generation:
                self._lock = _thread.allocate_lock()
                self._generation = _generation


def _after_fork_in_child() -> None:
    global _generation, _renewal
    _generation += 1
    _renewal = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
