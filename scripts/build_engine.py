#!/usr/bin/env python3
"""Build a Go engine (daprd, later kube-apiserver, etcd) from its pinned Go module: ``make daprd``.

``tools/ENGINE/`` is a wrapper Go module: its go.mod names the program in a ``tool`` directive,
pins its module in a ``require`` line (with whatever ``replace`` lines upstream needs), and
``build.toml`` gives the build tags, CGO and ``-X`` link flags. The binary goes to a cache outside
the repo, keyed by the pinned version and the Go toolchain, e.g.

    ~/.cache/baedal-engines/daprd-v1.18.2-go1.26-linux-amd64/daprd   ($BAEDAL_ENGINES_DIR overrides)

and is reused when present. It is built to a temporary name beside it and renamed, so a killed
build never leaves a half binary there. One line is printed: built in N s / already built / could
not build: why (exit 1). Only the standard library is used.

    scripts/build_engine.py daprd               # build unless already built
    scripts/build_engine.py daprd --print-path  # print where the binary is (or will be); no build
    scripts/build_engine.py daprd --rebuild     # build even when present
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"


class BuildError(Exception):
    """The engine could not be built; the message says why."""


@dataclass(frozen=True)
class Engine:
    name: str
    dir: Path
    package: str  # the main package built, from go.mod's tool directive
    module: str  # the module that provides it, pinned in go.mod's require lines
    version: str  # e.g. v1.18.2
    tags: tuple[str, ...] = ()
    cgo: bool = False
    ldflags_x: dict[str, str] = field(default_factory=dict)

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        values = {"version": self.version, "semver": self.version.removeprefix("v")}
        flags += [f"-X {name}={value.format(**values)}" for name, value in sorted(self.ldflags_x.items())]
        return " ".join(flags)


@dataclass(frozen=True)
class GoTarget:
    version: str  # go1.26.8
    goos: str
    goarch: str

    def key(self) -> str:
        """go1.26-linux-amd64: a Go patch release does not invalidate the binaries."""
        major_minor = ".".join(self.version.split(".")[:2])
        return f"{major_minor}-{self.goos}-{self.goarch}"


def go_mod_directives(text: str, verb: str) -> list[list[str]]:
    """The fields of every ``verb`` directive in a go.mod, single-line or in a ``verb ( ... )`` block."""
    found: list[list[str]] = []
    in_block = False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                found.append(line.split())
        elif line == f"{verb} (":
            in_block = True
        elif line.startswith(f"{verb} "):
            found.append(line.split()[1:])
    return found


def load_engine(name: str, tools: Path = TOOLS) -> Engine:
    directory = tools / name
    go_mod = directory / "go.mod"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not go_mod.is_file():
        known = sorted(p.parent.name for p in tools.glob("*/go.mod"))
        raise BuildError(f"no engine {name!r} (no {go_mod.relative_to(REPO)}); engines: {', '.join(known) or 'none'}")
    text = go_mod.read_text()
    tools_named = [fields[0] for fields in go_mod_directives(text, "tool")]
    if len(tools_named) != 1:
        raise BuildError(f"{go_mod} must name exactly one program in a tool directive, not {tools_named}")
    package = tools_named[0]
    requires = {fields[0]: fields[1] for fields in go_mod_directives(text, "require")}
    providers = [m for m in requires if package == m or package.startswith(m + "/")]
    if not providers:
        raise BuildError(f"{go_mod} requires no module providing {package}")
    module = max(providers, key=len)
    settings: dict[str, object] = {}
    if (build_toml := directory / "build.toml").is_file():
        settings = tomllib.loads(build_toml.read_text())
    tags = settings.get("tags", [])
    ldflags_x = settings.get("ldflags_x", {})
    cgo = settings.get("cgo", False)
    if not isinstance(tags, list) or not isinstance(ldflags_x, dict) or not isinstance(cgo, bool):
        raise BuildError(f"{build_toml}: tags must be a list, ldflags_x a table, cgo a boolean")
    return Engine(
        name=name,
        dir=directory,
        package=package,
        module=module,
        version=requires[module],
        tags=tuple(str(t) for t in tags),
        cgo=cgo,
        ldflags_x={str(k): str(v) for k, v in ldflags_x.items()},
    )


def go_target() -> GoTarget:
    go = shutil.which("go")
    if go is None:
        raise BuildError("no go command on PATH (install Go 1.26 or newer)")
    out = subprocess.run([go, "env", "-json", "GOVERSION", "GOOS", "GOARCH"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"go env failed: {out.stderr.strip()}")
    env = json.loads(out.stdout)
    return GoTarget(version=env["GOVERSION"], goos=env["GOOS"], goarch=env["GOARCH"])


def engines_dir() -> Path:
    if configured := os.environ.get("BAEDAL_ENGINES_DIR"):
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baedal-engines"


def binary_path(engine: Engine, target: GoTarget, root: Path | None = None) -> Path:
    """Where the engine's binary lives: one directory per engine, version and Go toolchain/platform."""
    key = f"{engine.name}-{engine.version}-{target.key()}"
    return (root if root is not None else engines_dir()) / key / engine.name


def build(engine: Engine, dest: Path) -> None:
    """Build into ``dest`` atomically: a temporary file beside it, renamed once complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    argv = ["go", "build", "-trimpath", "-ldflags", engine.ldflags(), "-o", str(tmp)]
    if engine.tags:
        argv += ["-tags", ",".join(engine.tags)]
    argv.append(engine.package)
    # GOTOOLCHAIN=local: never download a Go toolchain; an old Go fails with a clear message instead.
    env = {**os.environ, "CGO_ENABLED": "1" if engine.cgo else "0", "GOTOOLCHAIN": "local"}
    log = dest.parent / "build.log"
    try:
        with log.open("w") as out:
            done = subprocess.run(argv, cwd=engine.dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0 or not tmp.is_file():
            lines = [line for line in log.read_text().splitlines() if line and not line.startswith("go: downloading")]
            raise BuildError(f"go build exited {done.returncode}: {' | '.join(lines[-3:])} (full log: {log})")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("engine", help="a directory of tools/, e.g. daprd")
    parser.add_argument("--print-path", action="store_true", help="print the binary's path and exit (no build)")
    parser.add_argument("--rebuild", action="store_true", help="build even if the binary is already there")
    args = parser.parse_args(argv)
    try:
        engine = load_engine(args.engine)
        target = go_target()
        path = binary_path(engine, target)
        if args.print_path:
            print(path)
            return 0
        label = f"{engine.name} {engine.version}"
        if path.is_file() and not args.rebuild:
            print(f"{label}: already built: {path}")
            return 0
        if sys.stderr.isatty():
            print(f"{label}: building with {target.version} (the first build takes many minutes)...", file=sys.stderr)
        started = time.monotonic()
        build(engine, path)
        size_mb = path.stat().st_size / 1e6
        print(f"{label}: built in {time.monotonic() - started:.0f} s ({size_mb:.0f} MB): {path}")
        return 0
    except BuildError as exc:
        print(f"{args.engine}: could not build: {exc}")
        return 1
    except KeyboardInterrupt:  # the temporary file is gone already (build's finally)
        print(f"{args.engine}: could not build: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
