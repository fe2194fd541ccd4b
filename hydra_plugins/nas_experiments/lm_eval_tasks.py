"""Makes every lm-eval task name a config of the `task` group: `task=lambada_openai`, `task=[arc_easy,gsm8k]`.

`conf/task/` holds files only for tasks with settings of our own (ARC's acc_norm and dev-set search items, MMLU
5-shot); it comes first in the search path. Any other name in the `task` group is served from here as lm-eval's
task of that name with our defaults; whether lm-eval knows it is checked when the task is built, which fails
with close names and the `include_path` hint (indexing lm-eval's 13,000 YAMLs here would slow every command).
"""

from __future__ import annotations

import re

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from nas.evaluation.task_defaults import generic_task

GROUP = "task"
SCHEME = "nas-lm-eval"
# lm-eval task names: letters, digits, and _ - . (e.g. "mmlu_high_school_biology", "arc_easy", "bbh_cot_fewshot")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _task_name(config_path: str) -> str | None:
    path = config_path.strip("/")
    if path.endswith(".yaml"):
        path = path[: -len(".yaml")]
    group, _, name = path.partition("/")
    return name if group == GROUP and NAME.match(name) else None


class LMEvalTaskConfigSource(ConfigSource):
    """`nas-lm-eval://`: `task/<name>` for any lm-eval task name, as `{<name>: generic_task(<name>)}`."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") == GROUP

    def is_config(self, config_path: str) -> bool:
        return _task_name(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []  # lm-eval's names are not listed (`lm-eval ls tasks` does that)

    def load_config(self, config_path: str) -> ConfigResult:
        name = _task_name(config_path)
        if name is None:
            raise ConfigLoadError(f"Config not found: {config_path} ({SCHEME} serves task/<lm-eval task name> only)")
        return ConfigResult(
            config=OmegaConf.create({name: generic_task(name)}),
            path=f"{SCHEME}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(""),
        )


class LMEvalTaskSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=SCHEME, path=f"{SCHEME}://tasks")
