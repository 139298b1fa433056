"""Version matrix: the Python and Django versions this app states it supports.

``nox`` runs every session; ``nox -t tests`` only the test sessions; ``nox -s tests-3.12``
one of them. Python 3.11 + Django 5.2 LTS is required: a missing 3.11 fails the run.
Python 3.12 and 3.13 + Django 6.1 run wherever those interpreters exist (on PATH or
under pyenv's versions folder) and are reported as skipped, not failed, where they
do not, in CI too. Nox never downloads an interpreter.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import nox

nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"

PYTEST_ARGS = ["-m", "not browser and not celery", "-W", "error::DeprecationWarning"]


@dataclass(frozen=True)
class Target:
    python: str
    django: str
    required: bool


# Keep in step with setup.cfg's classifiers and the README's "Supported versions".
MATRIX = [
    Target(python="3.11", django="Django>=5.2,<5.3", required=True),
    Target(python="3.12", django="Django>=6.1,<6.2", required=False),
    Target(python="3.13", django="Django>=6.1,<6.2", required=False),
]


def _runs(executable: str, version: str) -> bool:
    """True when ``executable`` starts and is the wanted version (pyenv shims may not be)."""
    try:
        out = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_interpreter(version: str) -> str | None:
    """Absolute path of a working ``python<version>``: PATH first, then pyenv's versions folder."""
    candidates: list[str] = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")), reverse=True
    )
    return next((c for c in candidates if _runs(c, version)), None)


def _test_session(target: Target, interpreter: str) -> Callable[[nox.Session], None]:
    def tests(session: nox.Session) -> None:
        session.install("-e", ".[test]", target.django)
        session.run("python", "-m", "django", "--version")
        session.run("python", "-m", "pytest", *PYTEST_ARGS, *session.posargs)

    tests.__doc__ = f"Tests on Python {target.python} ({interpreter}) with {target.django}."
    return tests


def _missing_session(target: Target) -> Callable[[nox.Session], None]:
    message = f"Python {target.python} not found on PATH or under $PYENV_ROOT/versions"

    def tests(session: nox.Session) -> None:
        if target.required:
            session.error(f"{message}; it is required ({target.django})")
        session.skip(f"{message}; skipping {target.django} on Python {target.python}")

    tests.__doc__ = f"{message} ({'required' if target.required else 'optional'})."
    return tests


for _target in MATRIX:
    _interpreter = find_interpreter(_target.python)
    _name = f"tests-{_target.python}"
    if _interpreter:
        nox.session(python=_interpreter, name=_name, tags=["tests"])(_test_session(_target, _interpreter))
    else:
        nox.session(python=False, name=_name, tags=["tests"])(_missing_session(_target))
