"""Build step only (the project's metadata is in pyproject.toml): a wheel carries the top-level `conf/` and
`experiments/` inside the package, as `nas/_bundled/`, so an installed `nas` runs without the checkout
(`nas.io.locations` finds them there). Editable installs read the checkout's folders directly."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("conf", "experiments")


class BuildPyWithConfigs(build_py):
    """`build_py`, then the config folders copied into the built package."""

    def run(self) -> None:
        super().run()
        for folder in BUNDLED:
            target = Path(self.build_lib) / "nas" / "_bundled" / folder
            shutil.copytree(ROOT / folder, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
