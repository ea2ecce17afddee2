"""Build fasttcpstat's C extension.

The extension is built against the limited API (one abi3 wheel for every
CPython >= 3.8), except on free-threaded interpreters, which have no limited
API yet.  It is optional: without a compiler the package still installs and
counts through /proc (with a warning at import), unless FASTTCPSTAT_STRICT=1
asks for a failing build, as CI does.

On any other system than Linux the build stops here with a one-line message
(there are no wheels for them, so pip always ends up here).
"""
import sys

# First, before anything can fail differently: this is the message a user on
# macOS or Windows sees from `pip install fasttcpstat`.
if not sys.platform.startswith("linux"):
    sys.exit("fasttcpstat supports Linux only: it counts sockets through "
             "Linux's netlink sock_diag and /proc/net/tcp.")

import os  # noqa: E402
import sysconfig  # noqa: E402

import setuptools  # noqa: E402
from setuptools import Extension, setup  # noqa: E402

STRICT = os.environ.get("FASTTCPSTAT_STRICT") == "1"
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
LIMITED_API_HEX = "0x03080000"  # 3.8, as psutil: the oldest CPython in use on servers

# A call to an undeclared function truncates a returned pointer to int: never
# acceptable, not even in a lenient (non-strict) build.
compile_args = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-O2",
                "-Werror=implicit-function-declaration"]
if STRICT:
    compile_args.append("-Werror")

define_macros = []
options = {}
if not FREE_THREADED:
    define_macros.append(("Py_LIMITED_API", LIMITED_API_HEX))
    options["bdist_wheel"] = {"py_limited_api": "cp38"}

# The license is declared here, not in pyproject.toml: an SPDX expression
# (PEP 639) needs setuptools >= 77, which needs Python >= 3.9, while a source
# build on Python 3.8 gets setuptools 75 at most.  LICENSE is picked up by
# setuptools' default license-file patterns in both cases.
if int(setuptools.__version__.split(".")[0]) >= 77:
    license_metadata = {"license_expression": "MIT"}
else:
    license_metadata = {"license": "MIT"}

extension = Extension(
    "fasttcpstat._fasttcpstat",
    sources=[
        "csrc/_fasttcpstat.c",
        "csrc/bind_core.c",
        "csrc/bind_util.c",
        "csrc/bind_bpf.c",
        "csrc/diag_msg.c",
        "csrc/diag_sock.c",
        "csrc/diag_filter.c",
        "csrc/diag_cgroup.c",
        "csrc/btf.c",
        "csrc/bpf_prog.c",
        "csrc/bpf_iter.c",
        "csrc/bind_walk.c",
        "csrc/walk_prog.c",
        "csrc/walk_run.c",
        "csrc/btf_walk.c",
    ],
    depends=["csrc/diag.h", "csrc/diag_cgroup.h", "csrc/bind.h", "csrc/btf.h", "csrc/bpf_abi.h",
             "csrc/bpf_asm.h", "csrc/bpf_sys.h", "csrc/bpf_prog.h",
             "csrc/bpf_iter.h", "csrc/walk_prog.h", "csrc/walk_run.h"],
    include_dirs=["csrc"],
    define_macros=define_macros,
    extra_compile_args=compile_args,
    py_limited_api=not FREE_THREADED,
    optional=not STRICT,
)

setup(ext_modules=[extension], options=options, **license_metadata)
