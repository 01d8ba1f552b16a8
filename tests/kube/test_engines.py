"""``make kube-apiserver``: the wrapper modules of tools/kube-apiserver and tools/etcd pin one
release each, map what upstream maps to the published modules, and the binaries report it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dapr.test_engines import be, replaces, requires
from tests.support import chart

KUBERNETES = "k8s.io/kubernetes"
ETCD_SERVER = "go.etcd.io/etcd/server/v3"
# Not required by k8s.io/kubernetes, and refused (403) by the Go module proxy at v0.34.4.
UNREQUIRED_STAGING = {"k8s.io/sample-cli-plugin", "k8s.io/sample-controller"}


def upstream_go_mod(engine: str, module: str) -> str:
    """The go.mod of the version of ``module`` the engine's wrapper selects (`go list -m` fetches
    only .mod files, checked against go.sum)."""
    if shutil.which("go") is None:
        pytest.skip("no go command on PATH")
    listed = subprocess.run(
        ["go", "list", "-m", "-json", module],
        cwd=be.load_engine(engine).dir,
        env={**os.environ, "GOTOOLCHAIN": "local"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    return Path(json.loads(listed.stdout)["GoMod"]).read_text()


def test_the_kube_apiserver_wrapper_maps_every_staging_module_to_its_published_release() -> None:
    engine = be.load_engine("kube-apiserver")
    assert (engine.package, engine.module) == (f"{KUBERNETES}/cmd/kube-apiserver", KUBERNETES)
    staging_version = "v0." + engine.version.removeprefix("v1.")  # v1.37.2 publishes k8s.io/api v0.37.2
    ours = {fields[0]: fields[2:] for fields in replaces((engine.dir / "go.mod").read_text())}
    upstream = replaces(upstream_go_mod("kube-apiserver", KUBERNETES))
    staging = {fields[0] for fields in upstream if fields[2].startswith("./staging/")}
    assert set(ours) == staging - UNREQUIRED_STAGING
    assert all(target == [module, staging_version] for module, target in ours.items())
    minor = engine.version.split(".")[1]
    assert engine.ldflags_x["k8s.io/component-base/version.gitMinor"] == minor, "build.toml follows the version"
    assert not UNREQUIRED_STAGING & set(requires(upstream_go_mod("kube-apiserver", KUBERNETES)))


def test_the_pinned_kubernetes_release_is_one_the_chart_claims() -> None:
    oldest, newest = chart.claimed_kubernetes_versions()
    minor = int(be.load_engine("kube-apiserver").version.split(".")[1])
    assert int(oldest.split(".")[1]) <= minor <= int(newest.split(".")[1]), f"Chart.yaml claims {oldest}-{newest}"


def test_the_etcd_wrapper_pins_the_etcd_its_kubernetes_release_requires() -> None:
    etcd = be.load_engine("etcd")
    assert (etcd.package, etcd.module) == (ETCD_SERVER, ETCD_SERVER)
    assert requires(upstream_go_mod("kube-apiserver", KUBERNETES))["go.etcd.io/etcd/client/v3"] == etcd.version
    ours = replaces((etcd.dir / "go.mod").read_text())
    assert all(fields[2:] == [fields[0], etcd.version] for fields in ours)
    siblings = {fields[0] for fields in replaces(upstream_go_mod("etcd", ETCD_SERVER)) if fields[2].startswith("../")}
    assert {fields[0] for fields in ours} == siblings


@pytest.mark.parametrize(
    ("name", "flag", "expected"),
    [("etcd", "--version", "etcd Version: {semver}"), ("kube-apiserver", "--version", "Kubernetes {version}")],
)
def test_the_built_engine_reports_its_pinned_version(name: str, flag: str, expected: str) -> None:
    engine = be.load_engine(name)
    path = be.binary_path(engine, be.go_target())
    if not path.is_file():
        pytest.skip(f"{name} is not built ({path}): run `make kube-apiserver`")
    out = subprocess.run([path, flag], capture_output=True, text=True, timeout=30)
    first = out.stdout.splitlines()[0]
    assert first == expected.format(version=engine.version, semver=engine.version.removeprefix("v"))
