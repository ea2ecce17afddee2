"""Packaging: what was installed, its version, and the Linux-only build.

With FASTTCPSTAT_TEST_INSTALLED=1 (packaging/check_wheels.py and
cibuildwheel set it), the suite must be testing an installed wheel: the
package and its C extension come from site-packages, not from a source tree.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fasttcpstat
from fasttcpstat import _netlink

ROOT = Path(__file__).resolve().parent.parent
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

LINUX_ONLY_MESSAGE = ("fasttcpstat supports Linux only: it counts sockets through "
                      "Linux's netlink sock_diag and /proc/net/tcp.")


def _installed_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - 3.8 has it; be safe
        pytest.skip("importlib.metadata unavailable")
    try:
        return version("fasttcpstat")
    except PackageNotFoundError:
        pytest.skip("fasttcpstat is not installed (running from a source tree)")


def test_version_is_single_sourced() -> None:
    """The distribution's version is the one in fasttcpstat/_version.py."""
    assert fasttcpstat.__version__ == _installed_version()


def test_extension_is_built_for_the_stable_abi() -> None:
    """An abi3 build except on free-threaded interpreters (no limited API)."""
    if _netlink.IMPORT_ERROR is not None:
        pytest.skip(f"C extension not built: {_netlink.IMPORT_ERROR}")
    name = Path(_netlink._fasttcpstat.__file__).name
    if FREE_THREADED:
        assert ".abi3." not in name, name
    else:
        assert name == "_fasttcpstat.abi3.so", name


@pytest.mark.skipif(os.environ.get("FASTTCPSTAT_TEST_INSTALLED") != "1",
                    reason="only when testing an installed wheel "
                           "(FASTTCPSTAT_TEST_INSTALLED=1)")
def test_testing_the_installed_wheel() -> None:
    site_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    package_dir = Path(fasttcpstat.__file__).resolve().parent
    assert package_dir.parent in site_dirs, (
        f"fasttcpstat imported from {package_dir}, not from this "
        f"interpreter's site-packages {sorted(map(str, site_dirs))}"
    )
    assert _netlink.IMPORT_ERROR is None, f"the wheel lacks its C extension: {_netlink.IMPORT_ERROR}"
    assert Path(_netlink._fasttcpstat.__file__).resolve().parent == package_dir
    assert (package_dir / "py.typed").is_file()


@pytest.mark.skipif(not (ROOT / "setup.py").is_file(),
                    reason="needs the source tree's setup.py")
@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_build_refused_off_linux(platform: str) -> None:
    """The build (so `pip install` from the sdist) stops with one line."""
    code = (
        "import sys; sys.platform = %r; sys.argv = ['setup.py', 'bdist_wheel']\n"
        "path = 'setup.py'\n"
        "exec(compile(open(path).read(), path, 'exec'), "
        "{'__name__': '__main__', '__file__': path})\n" % platform
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == LINUX_ONLY_MESSAGE + "\n"
