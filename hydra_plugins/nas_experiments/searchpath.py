"""Makes the top-level `experiments/` folder the `experiments` config group, and nothing else.

The folder that holds `experiments/` is a checkout's root (with `.venv`, `.git`, `tests`, run outputs...)
or, installed, the package's bundled copy. A plain `file://` search path on it would make every one of
its sub-folders a config group, which `--help` and tab completion then walk (minutes in a checkout with
a virtual environment). `ExperimentsConfigSource` serves only the `experiments/` group from it.
"""

from __future__ import annotations

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin

from nas.io.locations import experiments_root

GROUP = "experiments"


class ExperimentsConfigSource(FileConfigSource):
    """`nas-experiments://<folder holding experiments/>`: a file config source exposing only that group."""

    @staticmethod
    def scheme() -> str:
        return "nas-experiments"

    @staticmethod
    def _exposed(config_path: str) -> bool:
        path = config_path.strip("/")
        return path in ("", GROUP) or path.startswith(GROUP + "/")

    def is_group(self, config_path: str) -> bool:
        return self._exposed(config_path) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return self._exposed(config_path) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if not self._exposed(config_path):
            return []
        if config_path.strip("/") == "":
            wanted = results_filter in (None, ObjectType.GROUP)
            return [GROUP] if wanted and super().is_group(GROUP) else []
        return super().list(config_path, results_filter)

    def load_config(self, config_path: str) -> ConfigResult:
        if not self._exposed(config_path):
            raise ConfigLoadError(f"Config not found: {config_path} (only {GROUP}/ is served from {self.path})")
        return super().load_config(config_path)


class NasExperimentsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nas-experiments", path=f"nas-experiments://{experiments_root()}")
