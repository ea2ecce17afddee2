"""Replay the kept fuzz corpus through the fuzz harnesses, with gcc.

fuzz/run.sh needs clang (libFuzzer); this test needs only the C compiler
the suite needs anyway: it links each harness with tests/c/fuzz_replay.c,
under ASan and UBSan where available, and runs it on every input of
fuzz/corpus/<target>/ and on the seeds from fuzz/make_seeds.py.  Each
harness checks its own invariants and its reference model (a wrong count,
a filter the kernel would refuse, a read past the buffer) and aborts on a
violation.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .hardening import ROOT
from .test_c_core import CFLAGS, SANITIZERS, _compiler, _sanitizers_available

TARGETS = {
    "fuzz_walk": ["diag_msg.c"],
    "fuzz_filter": ["diag_filter.c", "diag_msg.c"],
    "fuzz_btf": ["btf.c"],
    "fuzz_walkprog": ["walk_prog.c", "btf_walk.c", "btf.c"],
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_clean(tmp_path: Path, target: str) -> None:
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(ROOT / "fuzz/make_seeds.py"), str(seeds)],
                   check=True, capture_output=True)
    inputs = sorted((ROOT / "fuzz/corpus" / target).iterdir()) + sorted(
        (seeds / target).iterdir())
    assert len(inputs) > 10
    exe = tmp_path / target
    sanitize = SANITIZERS if _sanitizers_available(tmp_path) else []
    subprocess.run(
        [_compiler(), *CFLAGS, *sanitize, f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests/c'}",
         str(ROOT / "fuzz" / f"{target}.c"), str(ROOT / "tests/c/fuzz_replay.c"),
         *[str(ROOT / "csrc" / src) for src in TARGETS[target]], "-o", str(exe)],
        check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe), *map(str, inputs)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{len(inputs)} passed, 0 failed"
