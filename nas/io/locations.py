"""Where the project's configs and experiments are: the top-level `conf/` and `experiments/` of a checkout
(or an editable install), or the copies a wheel carries inside the package (`nas/_bundled/conf`,
`nas/_bundled/experiments`, put there by `setup.py` when the wheel is built)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent
_BUNDLED = _PACKAGE / "_bundled"


def _in_checkout() -> bool:
    """True when this package sits in the repository beside its `conf/` (not in site-packages)."""
    return (_CHECKOUT / "conf" / "pipeline.yaml").is_file() and (_CHECKOUT / "pyproject.toml").is_file()


def project_root() -> Path:
    """The checkout's root (beside which `../shared/data` is looked for), or the installed package's folder."""
    return _CHECKOUT if _in_checkout() else _PACKAGE


def config_dir() -> Path:
    """The folder of the Hydra config groups (`model/`, `search/`, ...) and entry configs."""
    return (_CHECKOUT if _in_checkout() else _BUNDLED) / "conf"


def experiments_root() -> Path:
    """The folder that holds `experiments/` (the named experiments, `experiments=<name>`)."""
    return _CHECKOUT if _in_checkout() else _BUNDLED
