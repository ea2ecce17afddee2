"""Build and run the C unit tests of the netlink core.

The parsing core (csrc/diag_msg.c) and the filter compiler
(csrc/diag_filter.c) are plain C; their tests feed them hand-made replies,
malformed ones included, and check compiled filters against a model of the
kernel's audit and interpreter, under AddressSanitizer and UBSan.
"""
from __future__ import annotations

import os
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
    "test_btf": ["bpf_prog.c", "btf_walk.c"],  # includes btf.c to count its work
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


# --------------------------------------------------------------------------
# The counter core (csrc/bind_core.c) as both C types use it: closed state
# --------------------------------------------------------------------------

CLOSED_MESSAGE = "I/O operation on a closed counter"


def _netlink_counter():
    from fasttcpstat import _fasttcpstat

    counter = _fasttcpstat.NetlinkCounter()
    return counter, {
        "count": lambda: counter.count(_fasttcpstat.FAMILY_BOTH,
                                       _fasttcpstat.ALL_STATES_MASK, _fasttcpstat.FORM_V2),
        "count_filtered": lambda: counter.count(_fasttcpstat.FAMILY_IPV4,
                                                _fasttcpstat.ALL_STATES_MASK,
                                                _fasttcpstat.FORM_LEGACY,
                                                local=[(80, 80)], by_port=[80]),
    }


def _bpf_counter():
    from fasttcpstat import _bpf, _fasttcpstat

    counter = _fasttcpstat.BpfCounter(_bpf.layout())

    def run_own_fd():
        r, w = os.pipe()
        os.close(w)
        try:
            counter.run(r)
        finally:
            # run() closes the fd it is given, even on a closed counter.
            try:
                os.close(r)
                leaked = True
            except OSError:
                leaked = False
            assert not leaked, "run() on a closed counter left its iter_fd open"

    return counter, {"create_iter": counter.create_iter, "run": run_own_fd}


def _fds() -> set:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("make", [_netlink_counter, _bpf_counter], ids=["netlink", "bpf"])
def test_a_closed_counter_refuses_everything_and_holds_nothing(make, request):
    if make is _bpf_counter:
        request.getfixturevalue("require_bpf")
    before = _fds()
    counter, operations = make()
    assert _fds() > before  # it did hold descriptors
    assert not counter.closed
    counter.close()
    counter.close()  # closing again is allowed, as for files
    assert counter.closed
    assert _fds() == before
    for name, operation in operations.items():
        for _ in range(2):  # never reopened by the first refusal
            with pytest.raises(ValueError) as info:
                operation()
            assert str(info.value) == CLOSED_MESSAGE, name
    assert _fds() == before
    if hasattr(counter, "needs_reopen"):
        assert counter.needs_reopen is False
    # Nor in a child of fork(), where an open counter would reopen.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for operation in operations.values():
                try:
                    operation()
                except ValueError as exc:
                    code = 0 if str(exc) == CLOSED_MESSAGE and code != 3 else 3
                else:
                    code = 3
        finally:
            os._exit(code if _fds() == before else 4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_c_sources_keep_pep7_line_length():
    """PEP 7: lines of at most 79 characters, no tabs, no trailing spaces
    (lines over it had crept into seven files)."""
    problems = []
    for path in sorted((ROOT / "csrc").glob("*.[ch]")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if len(line) > 79 or "\t" in line or line != line.rstrip():
                problems.append(f"{path.name}:{number}: {line!r}")
    assert not problems, problems
