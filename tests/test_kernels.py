"""tests/kernel.py's version checks, and how .ci/kernels judges one
kernel's junit XML (tests/kernels/summary.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import kernel

SUMMARY = Path(__file__).resolve().parent / "kernels" / "summary.py"

CASES = {
    "pass": '<testcase classname="tests.test_a" name="test_ok"/>',
    "skip": '<testcase classname="tests.test_a" name="test_s"><skipped message="no"/></testcase>',
    "fail": '<testcase classname="tests.test_a" name="test_f"><failure message="x"/></testcase>',
    "error": '<testcase classname="tests.test_a" name="test_e"><error message="x"/></testcase>',
}


def _judge(tmp_path, *kinds) -> "tuple[int, str]":
    xml = tmp_path / "junit.xml"
    xml.write_text("<testsuites><testsuite>%s</testsuite></testsuites>"
                   % "".join(CASES[k] for k in kinds))
    done = subprocess.run([sys.executable, str(SUMMARY), "6.1.0-50-amd64", str(xml)],
                          capture_output=True, text=True)
    return done.returncode, done.stdout


@pytest.mark.parametrize("kinds, code, line", [
    (("pass", "pass"), 0, "kernel 6.1.0-50-amd64: 2 passed, 0 skipped, 0 failed"),
    (("pass", "skip"), 1, "kernel 6.1.0-50-amd64: 1 passed, 1 skipped, 0 failed"),
    (("pass", "fail"), 1, "kernel 6.1.0-50-amd64: 1 passed, 0 skipped, 1 failed"),
    (("pass", "error"), 1, "kernel 6.1.0-50-amd64: 1 passed, 0 skipped, 1 failed"),
    ((), 1, "kernel 6.1.0-50-amd64: 0 passed, 0 skipped, 0 failed"),
])
def test_summary_line_and_verdict(tmp_path, kinds, code, line):
    got_code, out = _judge(tmp_path, *kinds)
    assert out.splitlines()[0] == line
    assert got_code == code


@pytest.mark.parametrize("release, code", [("6.1.0-50-amd64", 0), ("6.12.117+deb13-amd64", 1)])
def test_walk_tests_may_skip_only_below_6_2(tmp_path, release, code):
    xml = tmp_path / "junit.xml"
    xml.write_text('<testsuite>%s<testcase classname="tests.test_walk_engine" name="test_x">'
                   '<skipped message="old"/></testcase></testsuite>' % CASES["pass"])
    done = subprocess.run([sys.executable, str(SUMMARY), release, str(xml)],
                          capture_output=True, text=True)
    assert done.returncode == code, done.stdout


def test_missing_results_fail(tmp_path):
    done = subprocess.run([sys.executable, str(SUMMARY), "6.12", str(tmp_path / "none.xml")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout.startswith("kernel 6.12: no test results")


@pytest.mark.parametrize("release, want", [
    ("6.1.0-50-amd64", (6, 1)), ("6.12.117+deb13-amd64", (6, 12)), ("6.18.44-fc-v782", (6, 18)),
])
def test_version_of_a_release(release, want):
    assert kernel.version(release) == want


def test_has_follows_the_pretended_version(monkeypatch):
    monkeypatch.setenv("FASTTCPSTAT_TEST_KERNEL", "6.7")
    assert not kernel.has("bound_inactive_dump")
    monkeypatch.setenv("FASTTCPSTAT_TEST_KERNEL", "6.8")
    assert kernel.has("bound_inactive_dump")
    with pytest.raises(ValueError, match="feature must be one of"):
        kernel.has("no-such-feature")
