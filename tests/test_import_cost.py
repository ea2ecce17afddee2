"""`import fasttcpstat` stays cheap: the modules it pulls in, not a time.

typing (8-13 ms here), re (~4 ms), ctypes (~3 ms) and threading (~3 ms
with functools and collections) were most of the 15-25 ms import.  Neither the import nor a count on the default path
(auto, netlink, bpf) may bring them in; bench/importtime.py measures the
time itself.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

EXPENSIVE = {"typing", "re", "ctypes", "enum", "warnings", "inspect", "dataclasses"}

# json would bring re, enum and more before the baseline is taken: import
# it only at the end.
_CHILD = r"""
import sys
before = set(sys.modules)
import fasttcpstat
after_import = set(sys.modules) - before
{count}
after_count = set(sys.modules) - before
import json
print(json.dumps([sorted(after_import), sorted(after_count)]))
"""


def _modules(count: str) -> "tuple[set, set]":
    done = subprocess.run([sys.executable, "-c", _CHILD.format(count=count)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    after_import, after_count = json.loads(done.stdout)
    return set(after_import), set(after_count)


def test_import_pulls_in_no_expensive_module():
    after_import, _ = _modules("")
    assert not after_import & EXPENSIVE, sorted(after_import)
    # Nothing but the package: threading (with functools and collections,
    # ~3 ms) comes with the first backend, whose counts need it.
    others = {m for m in after_import if not m.startswith("fasttcpstat")}
    assert others <= {"__future__", "errno"}, sorted(others)


@pytest.mark.parametrize("count", [
    "fasttcpstat.counts()",
    "fasttcpstat.counts(backend='netlink', local_ports=[80, (1000, 2000)])",
    "fasttcpstat.Counter().counts_by_port([22, 80])",
])
def test_counting_pulls_in_no_expensive_module(count):
    _, after_count = _modules(count)
    assert not after_count & EXPENSIVE, sorted(after_count)
