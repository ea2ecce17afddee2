"""Build and run the C unit tests of the netlink core.

The parsing core (csrc/diag_msg.c) and the filter compiler
(csrc/diag_filter.c) are plain C; their tests feed them hand-made replies,
malformed ones included, and check compiled filters against a model of the
kernel's audit and interpreter, under AddressSanitizer and UBSan.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g", "-O1"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the C core's tests need cc or gcc")
    return cc


# Each C test program and the core source it tests.
C_TESTS = {
    "test_diag_msg": ["diag_msg.c"],
    "test_diag_filter": ["diag_filter.c"],
    "test_btf": ["btf.c", "bpf_prog.c"],
    "test_diag_cgroup": ["diag_cgroup.c"],
}


def _build(tmp_path: Path, name: str, sanitize: bool) -> Path:
    exe = tmp_path / name
    cmd = [_compiler(), *CFLAGS, *(SANITIZERS if sanitize else []),
           f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests/c'}", str(ROOT / "tests/c" / (name + ".c")),
           *(str(ROOT / "csrc" / src) for src in C_TESTS[name]), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def _sanitizers_available(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    result = subprocess.run(
        [_compiler(), *SANITIZERS, str(probe), "-o", str(tmp_path / "probe")],
        capture_output=True,
    )
    return result.returncode == 0


@pytest.mark.parametrize("name", sorted(C_TESTS))
def test_c_unit_tests(tmp_path: Path, name: str) -> None:
    sanitize = _sanitizers_available(tmp_path)
    exe = _build(tmp_path, name, sanitize)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed"), result.stdout


def test_core_compiles_warning_free(tmp_path: Path) -> None:
    """Every C source, binding included, is -Wall -Wextra -Werror clean."""
    import sysconfig

    include = sysconfig.get_paths()["include"]
    # As setup.py: free-threaded interpreters have no limited API.
    limited = ([] if sysconfig.get_config_var("Py_GIL_DISABLED")
               else ["-DPy_LIMITED_API=0x03080000"])
    for source in sorted(p.name for p in (ROOT / "csrc").glob("*.c")):
        subprocess.run(
            [_compiler(), *CFLAGS, *limited, f"-I{include}",
             f"-I{ROOT / 'csrc'}", "-c", str(ROOT / "csrc" / source),
             "-o", str(tmp_path / (source + ".o"))],
            check=True,
        )
