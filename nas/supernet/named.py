"""Pick a sub-network by name, as written on command lines and in configs.

Forms: `full`, `largest`, `smallest`, `random:<seed>`, the path of a JSON file written by
`SubNetwork.save` (or a `subnetwork.json` of an export), or an exported model's folder. Used by the pipeline (`subnets.names`, `export.subnet`) and by `python -m nas.export`.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import InvalidSubNetworkError
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import EXPORT_RECORD, SubNetwork

NAMED = ("full", "largest", "smallest")
ALLOWED_FORMS = (
    "full, largest, smallest, random:<seed> (e.g. random:3), or the path of a .json file written by "
    "SubNetwork.save (or an export's subnetwork.json) or of an exported model's folder"
)


def check_spec(spec: str) -> str:
    """Check `spec` without a model (so bad input fails before any heavy work); returns it stripped.

    A JSON file is read and parsed into a `SubNetwork`; whether it fits the model is checked later.
    """
    text = str(spec).strip()
    if text in NAMED:
        return text
    if text.startswith("random:"):
        seed = text.removeprefix("random:").strip()
        if not seed.lstrip("-").isdigit():
            raise InvalidSubNetworkError(
                f"Sub-network {spec!r}: the seed {seed!r} is not an integer; write e.g. random:3."
            )
        return text
    if text.endswith(".json") or (Path(text).expanduser() / EXPORT_RECORD).is_file():
        if not Path(text).expanduser().exists():
            raise InvalidSubNetworkError(
                f"Sub-network file {text} does not exist; pass a JSON file written by SubNetwork.save."
            )
        # Parsed here (JSON and fields), so a corrupt file fails before the model loads; the fit to
        # the model's shape is checked by `select_sub_network`.
        SubNetwork.load(Path(text).expanduser())
        return text
    raise InvalidSubNetworkError(f"Unknown sub-network {spec!r}; use {ALLOWED_FORMS}.")


def select_sub_network(spec: str, space: SearchSpace) -> SubNetwork:
    """The sub-network named by `spec` in `space`.

    A JSON file may hold any sub-network the model can run (it is checked against the model's shape,
    not against the space), so hand-made or searched architectures can be evaluated and exported.

    Raises:
        InvalidSubNetworkError: an unknown form (the message lists the allowed ones), a bad seed, or a
            file that is missing or does not fit the model.
    """
    text = check_spec(spec)
    if text == "full":
        return SubNetwork.full(space.shape)
    if text == "largest":
        return space.largest()
    if text == "smallest":
        return space.smallest()
    if text.startswith("random:"):
        return space.sample(int(text.removeprefix("random:")))
    return SubNetwork.load(Path(text).expanduser()).validate(space.shape)
