"""The image and the fly.io config agree with the app.

What the image must contain is derived from pyproject (packages found by setuptools and their
package-data), not from a list kept by hand: a new package or data file that the Dockerfile or
.dockerignore would leave out fails here, not on the first production call.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

from app.config import Settings
from app.runtime.drain import HANDLED_SIGNALS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- Dockerfile model


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def copy_sources(stage: Stage, before: str) -> list[str]:
    """Sources of the build-context COPY/ADD instructions that come before the first RUN
    containing ``before``."""
    sources: list[str] = []
    for keyword, rest in stage.instructions:
        if keyword == "RUN" and before in rest:
            return sources
        if keyword in {"COPY", "ADD"}:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(rest)):
                continue
            sources.extend(w.rstrip("/") for w in words[:-1])
    raise AssertionError(f"no RUN containing {before!r} in stage {stage.name}")


def covered(path: str, sources: list[str]) -> bool:
    return any(s in {".", "./"} or path == s or path.startswith(s + "/") for s in sources)


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last matching line wins; a match on a parent directory excludes
    everything inside it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _pattern_regex(rule.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_rules() -> list[str]:
    text = (ROOT / ".dockerignore").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


# --------------------------------------------------------------------------- what the app needs


def packaged_files() -> list[str]:
    """Every file setuptools puts in the wheel: package modules plus package-data matches."""
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    include = setuptools_cfg["packages"]["find"]["include"]
    packages = find_packages(str(ROOT), include=include)
    assert packages, "pyproject finds no package"
    files: list[str] = []
    for package in packages:
        pkg_dir = ROOT / package.replace(".", "/")
        files.extend(str(p.relative_to(ROOT)) for p in sorted(pkg_dir.glob("*.py")))
    for package, patterns in setuptools_cfg.get("package-data", {}).items():
        pkg_dir = ROOT / package.replace(".", "/")
        for pattern in patterns:
            for match in sorted(pkg_dir.glob(pattern)):
                if match.is_file() and "__pycache__" not in match.parts:
                    files.append(str(match.relative_to(ROOT)))
    return sorted(set(files))


def top_level_packages() -> set[str]:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {p for p in find_packages(str(ROOT), include=include) if "." not in p}


def first_party_imports(files: list[str]) -> dict[str, set[str]]:
    """Top-level names imported by packaged modules that exist as modules of this repo."""
    local = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    local |= {p.stem for p in ROOT.glob("*.py")}
    found: dict[str, set[str]] = {}
    for rel in files:
        if not rel.endswith(".py"):
            continue
        tree = ast.parse((ROOT / rel).read_text(), filename=rel)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in local:
                    found.setdefault(root, set()).add(rel)
    return found


def _import_nodes(tree: ast.AST, at_import_time: bool) -> list[ast.AST]:
    """Import statements run when the module is imported (module and class bodies), or only
    those inside functions (lazy imports)."""
    found: list[ast.AST] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom) and nested != at_import_time:
                found.append(child)
            visit(child, nested)

    visit(tree, False)
    return found


def third_party_imports(files: list[str], at_import_time: bool = True) -> dict[str, set[str]]:
    """Top-level third-party modules the packaged code imports when loaded, or lazily."""
    local = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    found: dict[str, set[str]] = {}
    for rel in files:
        if not rel.endswith(".py"):
            continue
        tree = ast.parse((ROOT / rel).read_text(), filename=rel)
        for node in _import_nodes(tree, at_import_time):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root not in local and root not in sys.stdlib_module_names:
                    found.setdefault(root, set()).add(rel)
    return found


def runtime_distributions(extras: bool = False) -> set[str]:
    """Distributions pip installs for ``pip install .`` (with ``extras``: ``.[all extras]``),
    transitively."""
    seen: set[str] = set()
    declared = list(PYPROJECT["project"]["dependencies"])
    if extras:
        for group in PYPROJECT["project"].get("optional-dependencies", {}).values():
            declared.extend(group)
    todo = [Requirement(r) for r in declared]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(Requirement(r) for r in requires)
    return seen


# --------------------------------------------------------------------------- tests: image


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def build_stage(stages: list[Stage]) -> Stage:
    for stage in stages:
        if any(k == "RUN" and "pip install ." in r for k, r in stage.instructions):
            return stage
    raise AssertionError("no stage runs `pip install .`")


def test_image_copies_every_packaged_file(stages: list[Stage]) -> None:
    sources = copy_sources(build_stage(stages), before="pip install .")
    rules = dockerignore_rules()
    files = packaged_files()
    assert any(f.startswith("app/") for f in files)
    missing = [f for f in files if not covered(f, sources)]
    ignored = [f for f in files if dockerignored(f, rules)]
    assert not missing, f"Dockerfile does not COPY: {missing}"
    assert not ignored, f".dockerignore leaves out: {ignored}"


def test_image_has_what_the_build_reads(stages: list[Stage]) -> None:
    sources = copy_sources(build_stage(stages), before="pip install .")
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    rules = dockerignore_rules()
    assert all(covered(f, sources) for f in needed), (needed, sources)
    assert not any(dockerignored(f, rules) for f in needed)


def test_dependencies_install_before_the_code_is_copied(stages: list[Stage]) -> None:
    """A code edit must not reinstall every dependency: the layer that installs them sees
    pyproject.toml, not app/."""
    steps = build_stage(stages).instructions
    deps = next(i for i, (k, r) in enumerate(steps) if k == "RUN" and "requirements" in r)
    code = next(i for i, (k, r) in enumerate(steps) if k == "COPY" and r.startswith("app "))
    assert deps < code
    assert not any(k == "COPY" and r.startswith("app") for k, r in steps[:deps])


def test_the_image_ships_the_example_agents_and_the_license(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert any(k == "COPY" and "agents.toml" in r for k, r in runtime.instructions)
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "MIT"


def test_app_imports_only_packaged_first_party_code() -> None:
    imports = first_party_imports(packaged_files())
    packaged = top_level_packages()
    assert "app" in imports  # the scan does see the app's own imports
    stray = {name: sorted(by) for name, by in imports.items() if name not in packaged}
    assert not stray, f"imported but not packaged (so not in the image): {stray}"


def _undeclared(imports: dict[str, set[str]], allowed: set[str]) -> dict[str, list[str]]:
    by_module = metadata.packages_distributions()
    return {
        module: sorted(files)
        for module, files in imports.items()
        if not any(canonicalize_name(d) in allowed for d in by_module.get(module, []))
    }


def test_every_module_level_import_is_a_runtime_dependency() -> None:
    """Dev-only packages (pytest, playwright, matplotlib ...) are not in the image, and the
    build's warm check imports every module: those imports must all be installed there."""
    imports = third_party_imports(packaged_files())
    assert {"starlette", "twilio"} <= imports.keys()  # the scan does see them
    missing = _undeclared(imports, runtime_distributions())
    assert not missing, f"imported by the app but not a runtime dependency: {missing}"


def test_lazy_imports_are_declared_somewhere() -> None:
    """An import inside a function may be a dev-only tool (the benchmark's charts), but it
    must still be a declared dependency, or nothing installs it at all."""
    imports = third_party_imports(packaged_files(), at_import_time=False)
    missing = _undeclared(imports, runtime_distributions(extras=True))
    assert not missing, f"imported lazily but declared nowhere: {missing}"


def test_runtime_stage_is_slim_non_root_and_warm(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "expected a multi-stage build"
    assert all(re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", s.base) for s in stages), [
        s.base for s in stages
    ]
    runtime = stages[-1]
    keywords = [k for k, _ in runtime.instructions]
    users = [r for k, r in runtime.instructions if k == "USER"]
    assert users and users[-1] not in {"root", "0"}
    # The warm check runs as the runtime user, after the virtualenv is in place.
    copy_venv = keywords.index("COPY")
    warm = next(i for i, (k, r) in enumerate(runtime.instructions)
                if k == "RUN" and "app.ops.warmcheck" in r)
    assert copy_venv < keywords.index("USER") < warm
    cmd = next(r for k, r in runtime.instructions if k == "CMD")
    script = ast.literal_eval(cmd)[0]
    assert script in PYPROJECT["project"]["scripts"]


def test_healthcheck_probes_the_apps_health_route(stages: list[Stage]) -> None:
    runtime = stages[-1]
    health = next(r for k, r in runtime.instructions if k == "HEALTHCHECK")
    env = " ".join(r for k, r in runtime.instructions if k == "ENV")
    defaults = Settings()
    assert f"PORT={defaults.server.port}" in env
    assert "/health" in health and str(defaults.server.port) in health
    assert health_path() == "/health"
    stop = next(r for k, r in runtime.instructions if k == "STOPSIGNAL")
    assert stop in {s.name for s in HANDLED_SIGNALS}


def health_path() -> str:
    source = (ROOT / "app" / "server.py").read_text()
    found = re.findall(r"Route\(\s*\"(/health)\"", source)
    assert found, "app.server no longer defines the /health route"
    return found[0]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = ["**/__pycache__", "*.egg-info", "tests", ".env.*", "!.env.example"]
    assert dockerignored("app/core/__pycache__/x.pyc", rules)
    assert dockerignored("voice_agent.egg-info/PKG-INFO", rules)
    assert not dockerignored("app/x.egg-info", rules)  # a root-anchored pattern
    assert dockerignored("tests/ops/test_x.py", rules)
    assert dockerignored(".env.local", rules)
    assert not dockerignored(".env.example", rules)
    assert not dockerignored("app/web/dashboard.html", rules)


# --------------------------------------------------------------------------- tests: fly.toml


@pytest.fixture(scope="module")
def fly() -> dict:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def test_fly_env_is_valid_settings(fly: dict) -> None:
    settings = Settings.from_env({k: str(v) for k, v in fly["env"].items()})
    service = fly["http_service"]
    assert service["internal_port"] == settings.server.port == Settings().server.port
    assert settings.server.host == "0.0.0.0"


def test_fly_keeps_a_warm_machine_behind_https(fly: dict) -> None:
    service = fly["http_service"]
    assert service["force_https"] is True
    assert service["auto_stop_machines"] in {"off", False}
    assert service["min_machines_running"] >= 1


def test_fly_concurrency_brackets_the_call_limit(fly: dict) -> None:
    settings = Settings.from_env({k: str(v) for k, v in fly["env"].items()})
    limits = fly["http_service"]["concurrency"]
    assert limits["type"] == "connections"
    # Past soft_limit the proxy prefers other machines before we refuse anyone; hard_limit
    # leaves room for an overflow call's webhook to reach us and hear the polite refusal.
    # The limit is per worker, and the machine runs WORKERS of them (its cores).
    per_machine = settings.server.max_concurrent_calls * settings.server.workers
    assert settings.server.workers == fly["vm"][0]["cpus"]
    assert limits["soft_limit"] < per_machine < limits["hard_limit"]
    # the limit was measured on a dedicated core; a shared vCPU is throttled under load
    assert fly["vm"][0]["cpu_kind"] == "performance"


def test_fly_checks_hit_the_health_route(fly: dict) -> None:
    checks = fly["http_service"]["checks"]
    assert checks and all(c["path"] == health_path() for c in checks)
    assert all(c.get("method", "GET").upper() == "GET" for c in checks)


def test_fly_stop_waits_for_the_drain(fly: dict) -> None:
    env = {k: str(v) for k, v in fly["env"].items()}
    settings = Settings.from_env(env)
    assert fly["kill_signal"] in {s.name for s in HANDLED_SIGNALS}
    assert "DRAIN_GRACE_S" in env and "DRAIN_TIMEOUT_S" in env  # explicit, not defaults
    budget = settings.server.drain_timeout_s + settings.ops.drain_grace_s
    assert budget < fly["kill_timeout"] <= 300


def test_fly_builds_this_dockerfile(fly: dict) -> None:
    dockerfile = fly.get("build", {}).get("dockerfile", "Dockerfile")
    assert (ROOT / dockerfile).is_file()
    assert fnmatch.fnmatch(dockerfile, "Dockerfile*")


def test_fly_scrapes_the_private_metrics_port(fly: dict) -> None:
    settings = Settings.from_env({k: str(v) for k, v in fly["env"].items()})
    assert fly["metrics"]["port"] == settings.server.metrics_port != settings.server.port
    assert fly["metrics"]["path"] == "/metrics"
    assert all(settings.server.metrics_port != s.get("internal_port")
               for s in [fly["http_service"], *fly.get("services", [])])
