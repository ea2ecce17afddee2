"""Constants have one source: the C extension exports them.

Python keeps copies of some of them today (fasttcpstat._states,
fasttcpstat._counter) and literal 16s for the length of a tally.  Each copy
is tied to the extension's value here, and a scan of the package's source
lists every literal copy of the tally length: a new one fails the test
(import NSTATES from the extension instead); one removed is fine.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

fasttcpstat = pytest.importorskip("fasttcpstat")
from fasttcpstat import _counter, _query, _states  # noqa: E402

C = pytest.importorskip("fasttcpstat._fasttcpstat")

PACKAGE = Path(fasttcpstat.__file__).resolve().parent

# (Python module, name there, name exported by the extension)
PYTHON_COPIES = [
    (_states, "FAMILY_IPV4", "FAMILY_IPV4"),
    (_states, "FAMILY_IPV6", "FAMILY_IPV6"),
    (_states, "FAMILY_BOTH", "FAMILY_BOTH"),
    (_states, "ALL_STATES_MASK", "ALL_STATES_MASK"),
    (_counter, "MAX_BY_PORT", "MAX_BY_PORT"),
    (fasttcpstat, "MAX_BY_PORT", "MAX_BY_PORT"),
    (_query, "MAX_BY_CGROUP", "MAX_BY_CGROUP"),
]

# Literal tally lengths (`[0] * 16`, `(0,) * 16`) in the package today:
# file -> how many.  They should become _fasttcpstat.NSTATES.
LITERAL_TALLY_LENGTHS = {"_bpf.py": 4, "_procfs.py": 3}


@pytest.mark.parametrize("module, name, c_name", PYTHON_COPIES,
                         ids=[f"{m.__name__}.{n}" for m, n, _ in PYTHON_COPIES])
def test_python_copy_equals_the_extension(module, name, c_name):
    assert getattr(module, name) == getattr(C, c_name)


def test_the_extension_exports_what_the_stub_declares():
    stub = ast.parse((PACKAGE / "_fasttcpstat.pyi").read_text())
    declared = {node.target.id for node in stub.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.annotation, ast.Name) and node.annotation.id == "int"}
    exported = {name for name in dir(C) if name.isupper() and isinstance(getattr(C, name), int)}
    assert declared == exported


def test_values_are_consistent():
    assert C.FAMILY_BOTH == C.FAMILY_IPV4 | C.FAMILY_IPV6
    assert C.STATES_ALL == C.ALL_STATES_MASK
    # One bit per named state, numbered from 1, within a tally's length.
    assert C.ALL_STATES_MASK == sum(1 << n for n in range(1, len(_states.STATES) + 1))
    assert C.NSTATES == 16 and len(_states.STATES) < C.NSTATES
    assert C.MAX_PORT_RANGES == 2048
    assert C.BPF_MAP_TYPE_ARRAY == 2 and C.BPF_MAP_TYPE_LRU_HASH == 9  # linux/bpf.h


def _literal_tally_lengths(source: str) -> int:
    """`<sequence> * 16` or `16 * <sequence>` expressions."""
    found = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if (isinstance(side, ast.Constant) and side.value == C.NSTATES
                        and isinstance(other, (ast.List, ast.Tuple))):
                    found += 1
    return found


def test_no_new_literal_copies_of_the_tally_length():
    found = {path.name: n for path in sorted(PACKAGE.glob("*.py"))
             if (n := _literal_tally_lengths(path.read_text())) > 0}
    for name, n in found.items():
        assert n <= LITERAL_TALLY_LENGTHS.get(name, 0), (
            f"{name}: {n} literal tally lengths; use _fasttcpstat.NSTATES")
