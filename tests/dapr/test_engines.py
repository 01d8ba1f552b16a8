"""``make daprd`` (scripts/build_engine.py): engines built from their pinned Go module, cached by version.

What is cheap is checked always: the wrapper module pins one release and repeats that release's
``replace`` lines (when its go.mod is in the Go module cache), the cache path is keyed by version and
toolchain, and a build is atomic (on a two-line Go program). The real daprd is only run when it is
already built (``make daprd``, many minutes the first time).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import ROOT

REPO = ROOT
SCRIPT = REPO / "scripts" / "build_engine.py"
DAPR = "github.com/dapr/dapr"
NO_GO = pytest.mark.skipif(shutil.which("go") is None, reason="no go command on PATH (install Go 1.26 or newer)")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_engine", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_engine"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


be = load_script()


def requires(go_mod: str) -> dict[str, str]:
    return {fields[0]: fields[1] for fields in be.go_mod_directives(go_mod, "require")}


def replaces(go_mod: str) -> list[list[str]]:
    return sorted(be.go_mod_directives(go_mod, "replace"))


def upstream_go_mod(version: str) -> str:
    """dapr's own go.mod for ``version``, from the Go module cache; skip when it is not downloaded."""
    if shutil.which("go") is None:
        pytest.skip("no go command on PATH")
    cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    path = Path(cache) / "cache" / "download" / DAPR / "@v" / f"{version}.mod"
    if not path.is_file():
        pytest.skip(f"{DAPR}@{version} is not in the Go module cache (run `make daprd` or `go mod download`)")
    return path.read_text()


def test_daprd_wrapper_pins_one_dapr_release() -> None:
    engine = be.load_engine("daprd")
    assert (engine.package, engine.module) == (f"{DAPR}/cmd/daprd", DAPR)
    assert re.fullmatch(r"v1\.(1[6-9]|[2-9]\d)\.\d+", engine.version), "one Dapr release, 1.16 or newer"
    text = (REPO / "tools" / "daprd" / "go.mod").read_text()
    assert re.findall(rf"^\s*(?:require )?{re.escape(DAPR)} (\S+)", text, re.M) == [engine.version]
    assert "stablecomponents" in engine.tags
    assert f"-X {DAPR}/pkg/buildinfo.version={engine.version[1:]}" in engine.ldflags()


def test_daprd_wrapper_has_the_replace_lines_and_versions_of_its_dapr_release() -> None:
    engine = be.load_engine("daprd")
    ours = (REPO / "tools" / "daprd" / "go.mod").read_text()
    theirs = upstream_go_mod(engine.version)
    assert replaces(ours) == replaces(theirs)
    assert replaces(ours), "dapr's go.mod has replace lines: they are why the wrapper exists"
    # `go mod tidy` moved nothing: every module both list is at dapr's version.
    mine, upstream = requires(ours), requires(theirs)
    assert {m: v for m, v in mine.items() if m in upstream and upstream[m] != v} == {}


def test_the_cache_path_is_keyed_by_version_and_toolchain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAEDAL_ENGINES_DIR", str(tmp_path))
    engine = be.load_engine("daprd")
    target = be.GoTarget(version="go1.26.8", goos="linux", goarch="amd64")
    path = be.binary_path(engine, target)
    assert path == tmp_path / f"daprd-{engine.version}-go1.26-linux-amd64" / "daprd"
    other = be.Engine(name="daprd", dir=engine.dir, package=engine.package, module=DAPR, version="v1.99.0")
    assert be.binary_path(other, target) != path
    assert be.binary_path(engine, be.GoTarget("go1.26.9", "linux", "amd64")) == path  # a Go patch release reuses it
    assert be.binary_path(engine, be.GoTarget("go1.27.0", "linux", "amd64")) != path
    assert be.binary_path(engine, be.GoTarget("go1.26.8", "linux", "arm64")) != path


@NO_GO
def test_print_path_names_the_cached_binary_without_building(tmp_path: Path) -> None:
    env = {**os.environ, "BAEDAL_ENGINES_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, SCRIPT, "daprd", "--print-path"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent.parent == tmp_path and path.name == "daprd"
    assert path.parent.name.startswith(f"daprd-{be.load_engine('daprd').version}-go")
    assert list(tmp_path.iterdir()) == []


@NO_GO
def test_an_unknown_engine_says_so() -> None:
    out = subprocess.run([sys.executable, SCRIPT, "nope"], capture_output=True, text=True)
    assert out.returncode == 1
    engines = "daprd, etcd, kube-apiserver"
    assert out.stdout == f"nope: could not build: no engine 'nope' (no tools/nope/go.mod); engines: {engines}\n"


@NO_GO
def test_a_build_is_renamed_into_place_only_when_it_succeeds(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "go.mod").write_text("module example.invalid/hello\n\ngo 1.22\n")
    engine = be.Engine(name="hello", dir=source, package=".", module="example.invalid/hello", version="v0.0.1")
    dest = tmp_path / "cache" / "hello-v0.0.1" / "hello"

    (source / "main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    with pytest.raises(be.BuildError, match="undefined"):
        be.build(engine, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["build.log"], "no binary, no temporary file"

    (source / "main.go").write_text('package main\n\nfunc main() { println("hello") }\n')
    be.build(engine, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["build.log", "hello"]
    assert subprocess.run([dest], capture_output=True, text=True).stderr == "hello\n"


@NO_GO
def test_the_built_daprd_reports_its_pinned_version() -> None:
    engine = be.load_engine("daprd")
    path = be.binary_path(engine, be.go_target())
    if not path.is_file():
        pytest.skip(f"daprd is not built ({path}): run `make daprd`")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == engine.version.removeprefix("v")
