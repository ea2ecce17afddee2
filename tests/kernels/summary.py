"""Read back one kernel's results (pytest's junit xml) for .ci/kernels.

Prints `kernel RELEASE: N passed, M skipped, F failed` and exits 1 if a
test failed or errored, if a test skipped that must run on every kernel
(all but those that tests/kernel.py MAY_SKIP allows on that release), or if
nothing ran at all.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def results(junit_path: str) -> dict:
    """{"passed": [...], "skipped": [(nodeid, reason)], "failed": [...]}."""
    out = {"passed": [], "skipped": [], "failed": []}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        nodeid = "%s::%s" % (case.get("classname", ""), case.get("name", ""))
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"].append(nodeid)
        elif skipped is not None:
            out["skipped"].append((nodeid, skipped.get("message", "")))
        else:
            out["passed"].append(nodeid)
    return out


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: summary.py RELEASE JUNIT_XML", file=sys.stderr)
        return 2
    release, junit_path = argv[1], argv[2]
    try:
        got = results(junit_path)
    except (OSError, ET.ParseError) as exc:
        print("kernel %s: no test results (%s)" % (release, exc))
        return 1
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
    from kernel import FEATURES, MAY_SKIP, version  # tests/kernel.py

    lacks = {f for f, first in FEATURES.items() if version(release) < first}

    print("kernel %s: %d passed, %d skipped, %d failed"
          % (release, len(got["passed"]), len(got["skipped"]), len(got["failed"])))
    bad = False
    for nodeid in got["failed"]:
        print("  failed: %s" % nodeid)
        bad = True
    for nodeid, reason in got["skipped"]:
        module = nodeid.split("::")[0].rsplit(".", 1)[-1]
        allowed = MAY_SKIP.get(module) in lacks
        print("  skipped%s: %s (%s)" % ("" if allowed else " (must run)", nodeid, reason))
        bad = bad or not allowed
    return 1 if bad or not got["passed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
