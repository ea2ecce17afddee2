"""deploy/: the DaemonSet, Service and namespace validated against the
Kubernetes schemas (kubernetes-validate ships them: no network), and the
privileges they ask for checked against the ones the comments justify."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from .conftest import require

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "daemonset.yaml"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
# appArmorProfile is a securityContext field since Kubernetes 1.30: the
# oldest release the manifest is for.  And the newest the package knows.
VERSIONS = ["1.30.0", "latest"]
# Each capability and the reason the manifest's comment must give.
CAPABILITIES = {"SYS_PTRACE", "SYS_ADMIN", "BPF", "PERFMON"}


@pytest.fixture(scope="module")
def kv():
    try:
        import kubernetes_validate.utils as utils
    except ImportError as exc:
        require(False, "kubernetes-validate (the test extra)", str(exc))
    return utils


@pytest.fixture(scope="module")
def resources(kv):
    return kv.resources_from_file(str(MANIFEST))


def _version(kv, version: str) -> str:
    return kv.latest_version() if version == "latest" else version


@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_validates_strictly(kv, resources, version):
    kinds = [r["kind"] for r in resources]
    assert kinds == ["Namespace", "DaemonSet", "Service"]
    for resource in resources:
        kv.validate(resource, _version(kv, version), strict=True)


def test_validator_rejects_a_broken_manifest(kv, resources):
    """The check can fail: a misspelt field and a wrong type are caught."""
    daemonset = copy.deepcopy(resources[1])
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(daemonset, kv.latest_version(), strict=True)
    daemonset = copy.deepcopy(resources[1])
    daemonset["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kv.ValidationError):
        kv.validate(daemonset, kv.latest_version(), strict=False)


def test_least_privileges(resources):
    pod = resources[1]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is False
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == CAPABILITIES
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every added capability is explained in the header comment.
    header = MANIFEST.read_text().split("apiVersion:", 1)[0]
    explained = set(re.findall(r"^# - ([A-Z_]{3,}(?:, [A-Z_]{3,})*)[ :]", header, re.M))
    assert CAPABILITIES == {cap for line in explained for cap in line.split(", ")}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/run/netns"]["readOnly"] is True


def test_scrape_annotations_and_command(resources):
    daemonset, service = resources[1], resources[2]
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]
    assert container["args"][:2] == ["--all-netns", "--serve"]
    assert container["args"][2].endswith(f":{port}")
    # The image's default command is the DaemonSet's.
    cmd = re.search(r"^CMD (\[.*\])$", CONTAINERFILE.read_text(), re.M)
    assert cmd is not None
    assert json.loads(cmd.group(1)) == container["args"]
