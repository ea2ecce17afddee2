"""The command's contract outside any socket population: exit statuses and
one-line messages, what it imports, the typed package, and the renderers.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

import fasttcpstat
from fasttcpstat import _formats, _watch
from fasttcpstat._options import build_parser, listen_address

from .cli_tools import assert_one_line_error as _assert_one_line_error
from .cli_tools import AS_NOBODY as _AS_NOBODY
from .cli_tools import cli, parse_exposition, parse_table
from .cli_tools import main_in_process as _main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv, words", [
    (["--local-port", "70000"], ["--local-port", "port 70000 is not within 0..65535"]),
    (["--local-port", "https"], ["--local-port", "'https' is not a port"]),
    (["--remote-port", "9000-8000"], ["--remote-port", "low > high"]),
    (["--remote-port", "1-"], ["--remote-port", "'1-' is not a port"]),
    (["--by-port", "9000-9010"], ["--by-port", "single ports only"]),
    (["--by-port", ",".join(str(p) for p in range(1, 1100))], ["--by-port", "at most 1024"]),
    (["--state", "established,bogus"], ["unknown TCP state 'bogus'", "allowed: ESTABLISHED"]),
    (["--netns", "/nonexistent/netns"], ["netns: no such file", "/nonexistent/netns",
                                         "/var/run/netns/NAME"]),
    (["--netns", str(2 ** 22 + 12345)], ["--netns: no process with pid", "or the pid of a process"]),
    (["--netns", "/proc/self/ns/uts"], ["not a network namespace"]),
])
def test_refused_values_exit_1_with_one_line(capsys, argv, words):
    code, out, err = _main(capsys, *argv)
    assert (code, out) == (1, "")
    _assert_one_line_error(err, *words)


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--format", "xml"], ["invalid choice: 'xml'"]),
    (["--family", "ipv5"], ["invalid choice: 'ipv5'"]),
    (["--backend", "ebpf"], ["invalid choice: 'ebpf'"]),
    (["--interval", "0"], ["--interval", "positive"]),
    (["--interval", "soon"], ["--interval", "not a number"]),
    (["--interval", "1", "--count", "0"], ["--count", "at least 1"]),
    (["--count", "3"], ["--count needs --interval"]),
    (["--side", "remote"], ["--side applies to --by-port only"]),
    (["--by-port", "443", "--local-port", "1"], ["--by-port cannot be combined"]),
    (["--watch", "--format", "json"], ["--watch draws its own view"]),
    (["--watch", "--by-family"], ["--watch shows totals"]),
    (["--watch", "--serve", "9100"], ["--watch and --serve cannot be combined"]),
    (["--textfile", "x.prom", "--serve", "9100"], ["--textfile and --serve"]),
    (["--textfile", "tcp.txt"], ["must end in .prom"]),
    (["--textfile", "x.prom", "--format", "json"], ["--textfile writes the Prometheus format"]),
    (["--format", "prometheus", "--interval", "5"], ["use --textfile"]),
    (["--serve", "9100", "--interval", "5"], ["--serve counts at every scrape"]),
    (["--serve", "localhost:http"], ["expected PORT or ADDR:PORT"]),
    (["--serve", "70000"], ["expected PORT or ADDR:PORT"]),
    (["--backend", "pinned"], ["--backend pinned needs --pinned PATH"]),
    (["--pinned", "/sys/fs/bpf/x", "--backend", "netlink"], ["--backend netlink does not apply"]),
    (["pin", "/sys/fs/bpf/a", "/sys/fs/bpf/b"], ["unrecognized arguments"]),
])
def test_usage_errors_exit_2(capsys, argv, words):
    code, out, err = _main(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: fasttcpstat")
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("fasttcpstat: error: ", "fasttcpstat pin: error: "))
    for word in words:
        assert word in last, (word, last)


def test_exit_statuses_of_the_real_command():
    """The statuses as a shell sees them, through `python -m fasttcpstat`."""
    code, out, err = cli("--local-port", "70000")
    assert (code, out) == (1, "")
    _assert_one_line_error(err, "--local-port")
    code, out, err = cli("--no-such-option")
    assert (code, out) == (2, "")
    assert err.startswith("usage: fasttcpstat") and "Traceback" not in err


def test_textfile_in_a_missing_directory(tmp_path):
    code, out, err = cli("--textfile", str(tmp_path / "missing" / "tcp.prom"))
    assert (code, out) == (1, "")
    _assert_one_line_error(err, f"cannot write {tmp_path / 'missing' / 'tcp.prom'}",
                           "No such file or directory", "must exist and be writable")


def test_serve_without_prometheus_client():
    """Nothing listens: the missing package is found before any socket."""
    code = ("import sys; sys.modules['prometheus_client'] = None; "
            "from fasttcpstat._cli import main; sys.exit(main(['--serve', '0']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    _assert_one_line_error(done.stderr, "pip install 'fasttcpstat[prometheus]'")



def test_permission_error_says_what_to_do(require_netns, small_population):
    pop = small_population
    done = subprocess.run([sys.executable, "-c", _AS_NOBODY, "--netns", pop.ns_path,
                           "--backend", "netlink"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    _assert_one_line_error(done.stderr, pop.ns_path, "--backend procfs --netns PID")
    # The alternative it names works without privileges.
    done = subprocess.run([sys.executable, "-c", _AS_NOBODY, "--netns", str(pop.holder_pid),
                           "--backend", "procfs", "--state", "listen"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    listen = pop.expected["ipv4"]["LISTEN"] + pop.expected["ipv6"]["LISTEN"]
    assert json.loads(done.stdout) == {"LISTEN": listen}


def test_pin_then_count_through_the_pinned_file(require_netns, require_bpf, small_population):
    """`fasttcpstat pin` as root; then nobody, inside the population's
    namespace, counts it with --pinned."""
    pop = small_population
    path = f"/sys/fs/bpf/fasttcpstat-cli-test-{os.getpid()}"
    if os.path.lexists(path):
        os.unlink(path)
    code, out, err = cli("pin", path)
    try:
        assert (code, out, err) == (0, path + "\n", "")
        code, out, err = cli("pin", path)
        assert (code, out) == (1, "")
        _assert_one_line_error(err, "already exists", path)

        def read_as_nobody():
            return subprocess.run([sys.executable, "-c", _AS_NOBODY, "--pinned", path,
                                   "--by-family"], capture_output=True, text=True, timeout=60)

        done = pop.run(read_as_nobody)
    finally:
        os.unlink(path)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == pop.expected


def test_pin_outside_a_bpf_filesystem(capsys, tmp_path):
    code, out, err = _main(capsys, "pin", str(tmp_path / "x"))
    assert (code, out) == (1, "")
    _assert_one_line_error(err, "is not a BPF filesystem", "mount -t bpf")


def test_version_and_help():
    code, out, err = cli("--version")
    assert (code, out, err) == (0, f"fasttcpstat {fasttcpstat.__version__}\n", "")
    code, out, _ = cli("--help")
    assert code == 0
    for option in ("--family", "--state", "--local-port", "--remote-port", "--by-port",
                   "--by-family", "--netns", "--backend", "--format", "--interval",
                   "--count", "--watch", "--textfile", "--serve", "--version"):
        assert option in out


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "fasttcpstat")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"fasttcpstat {fasttcpstat.__version__}\n")


def test_prometheus_client_is_never_imported_by_the_core():
    """The core has no runtime dependency: neither `import fasttcpstat` nor
    the command's other modes (the Prometheus text included) load it."""
    code = (
        "import sys, io, contextlib\n"
        "import fasttcpstat, fasttcpstat.__main__, fasttcpstat._cli as cli\n"
        "assert 'prometheus_client' not in sys.modules, 'import'\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert cli.main(['--format', 'prometheus', '--by-family']) == 0\n"
        "assert 'fasttcpstat_connections' in out.getvalue()\n"
        "assert 'prometheus_client' not in sys.modules, 'main'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_mypy_strict_is_clean():
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    if os.path.isdir(os.path.join(ROOT, "src", "fasttcpstat")):
        target = ["src/fasttcpstat"]  # the sources being worked on
    else:
        # Tests run against an installed wheel, away from the sources: its
        # py.typed and .pyi must be enough for mypy to check it (PEP 561).
        target = ["-p", "fasttcpstat"]
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", *target],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_package_ships_its_type_information():
    package = os.path.dirname(fasttcpstat.__file__)
    assert os.path.isfile(os.path.join(package, "py.typed"))
    assert os.path.isfile(os.path.join(package, "_fasttcpstat.pyi"))


# ---- argument parsing details ------------------------------------------------


@pytest.mark.parametrize("text, address", [
    ("9977", ("127.0.0.1", 9977)),
    ("0.0.0.0:9977", ("0.0.0.0", 9977)),
    ("[::1]:9977", ("::1", 9977)),
    ("::1:9977", ("::1", 9977)),
    ("10.0.0.5:0", ("10.0.0.5", 0)),
])
def test_listen_address(text, address):
    assert listen_address(text) == address


def test_parser_defaults():
    args = build_parser().parse_args([])
    assert args.backend == "auto" and args.format is None and args.serve is None
    assert set(build_parser()._option_string_actions["--backend"].choices) == set(
        fasttcpstat.BACKENDS)


# ---- renderers ---------------------------------------------------------------

STATES = fasttcpstat.STATES
WHEN = datetime.datetime(2025, 11, 25, 21, 5, 0, 123456, tzinfo=datetime.timezone.utc)


def _counts(seed: int) -> dict:
    return {state: (seed * (i + 3)) % 17 for i, state in enumerate(STATES)}


def test_json_shapes():
    plain = [((), _counts(1))]
    assert json.loads(_formats.render_json(plain)) == _counts(1)
    assert json.loads(_formats.render_json(plain, WHEN)) == {
        "time": "2025-11-25T21:05:00.123Z", **_counts(1)}
    ports = [((("family", "ipv4"), ("port", "443"), ("side", "local")), _counts(2)),
             ((("family", "ipv6"), ("port", "443"), ("side", "local")), _counts(3))]
    assert json.loads(_formats.render_json(ports)) == {
        "ipv4": {"443": _counts(2)}, "ipv6": {"443": _counts(3)}}


def test_table_and_exposition_agree():
    series = [((("port", "443"), ("side", "remote")), _counts(4)),
              ((("port", "80"), ("side", "remote")), _counts(5))]
    assert parse_table(_formats.render_table(series)) == {
        "remote:443": _counts(4), "remote:80": _counts(5)}
    assert parse_exposition(_formats.render_prometheus(series)) == {
        (("port", "443"), ("side", "remote")): _counts(4),
        (("port", "80"), ("side", "remote")): _counts(5)}


def test_exposition_escapes_label_values():
    text = _formats.render_prometheus([((("family", 'a"b\\c\nd'),), {"LISTEN": 1})])
    assert 'family="a\\"b\\\\c\\nd"' in text
    assert parse_exposition(text) == {(("family", 'a"b\\c\nd'),): {"LISTEN": 1}}


def test_watch_frame():
    frame = _watch.Frame(when=WHEN, counts={"ESTABLISHED": 40, "LISTEN": 3, "CLOSING": 0},
                         previous={"ESTABLISHED": 42, "LISTEN": 3, "CLOSING": 0},
                         seconds=0.00125, backend="netlink", netns="net:[1]")
    lines = _watch.render(frame, width=60)
    assert lines[0] == f"fasttcpstat {fasttcpstat.__version__}  backend netlink  netns net:[1]"
    assert lines[1] == "total 43  count took 1.25 ms  2025-11-25T21:05:00.123Z"
    rows = {line.split()[0]: line for line in lines[4:]}
    assert rows["ESTABLISHED"].split()[1:3] == ["40", "-2"]
    assert rows["LISTEN"].split()[1:3] == ["3", "+0"]
    assert rows["CLOSING"].split()[1:] == ["0", "+0"]  # no bar for zero
    assert all(len(line) <= 60 for line in lines[2:])
    bar = rows["ESTABLISHED"].split()[3]
    # The largest count's bar fills the width exactly: 60 columns minus the
    # name (11), count (5: "COUNT"), change (6: "CHANGE") and 3 gaps of 2.
    assert len(rows["ESTABLISHED"]) == 60
    assert len(bar) == 60 - (11 + 5 + 6 + 6) == 32
    assert rows["LISTEN"].split()[3] == "#" * (len(bar) * 3 // 40)
