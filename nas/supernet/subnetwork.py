"""`SubNetwork`, the one description of an architecture inside the super-network, and `ModelShape`.

A sub-network is fully explicit (which layers, and per kept layer its MLP width and its query heads),
so it stays meaningful when it travels from a sampler to the model, the metrics, an export or a
results database, independently of the search space that produced it.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import InvalidSubNetworkError
from nas.io.atomic import write_json

# The record an exported model folder holds (`nas.export.standalone`); it embeds the sub-network.
EXPORT_RECORD = "subnetwork.json"
# The decoder linears of the Llama module tree, named relative to a decoder layer.
ATTENTION_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP_LINEARS = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# Architectures whose biases no config flag describes: Qwen2 always biases q, k and v, never o.
_BIASED_BY_MODEL_TYPE = {"qwen2": ATTENTION_LINEARS[:3]}


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of the full (super-)network that bound every sub-network.

    `biased_linears` names the decoder linears (as in `ATTENTION_LINEARS`, `MLP_LINEARS`) that have a bias.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    biased_linears: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept a list (from JSON) but store a tuple so the shape stays hashable.
        object.__setattr__(self, "biased_linears", tuple(self.biased_linears))
        unknown = set(self.biased_linears) - set(ATTENTION_LINEARS + MLP_LINEARS)
        if unknown:
            raise ValueError(f"biased_linears {sorted(unknown)} are not among {ATTENTION_LINEARS + MLP_LINEARS}.")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (GQA); sub-networks keep whole groups."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read the shape from a Hugging Face Llama-family config."""
        num_heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
        return cls(
            num_layers=int(config.num_hidden_layers),
            hidden_size=int(config.hidden_size),
            intermediate_size=int(config.intermediate_size),
            num_heads=num_heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or num_heads),
            head_dim=int(head_dim),
            vocab_size=int(config.vocab_size),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            biased_linears=_biased_linears(config),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelShape:
        """The inverse of `dataclasses.asdict`; also reads records that still hold `attention_bias`/`mlp_bias`."""
        data = dict(data)
        attention, mlp = bool(data.pop("attention_bias", False)), bool(data.pop("mlp_bias", False))
        data.setdefault("biased_linears", (ATTENTION_LINEARS if attention else ()) + (MLP_LINEARS if mlp else ()))
        return cls(**data)


def _biased_linears(config: Any) -> tuple[str, ...]:
    """Which decoder linears of a Llama-family config have a bias."""
    fixed = _BIASED_BY_MODEL_TYPE.get(getattr(config, "model_type", ""))
    if fixed is not None:
        return fixed
    attention = ATTENTION_LINEARS if getattr(config, "attention_bias", False) else ()
    return attention + (MLP_LINEARS if getattr(config, "mlp_bias", False) else ())


def _whole(value: Any, field: str) -> int:
    """`value` as an int when it is one (numpy integers too); floats, booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidSubNetworkError(
            "A SubNetwork's layers, mlp_sizes and num_heads are lists of integers and hidden_size an integer; "
            f"{field} holds {value!r} ({type(value).__name__}). Write whole numbers, e.g. layers: [0, 1, 2]."
        )
    return int(value)


@dataclass(frozen=True)
class SubNetwork:
    """An architecture inside the super-network.

    Attributes:
        layers: indices of the kept decoder layers, in execution order (ascending).
        mlp_sizes: MLP intermediate size of each kept layer.
        num_heads: query heads of each kept layer; a whole number of KV groups (GQA stays valid).
        hidden_size: embedding (residual stream) width; the first `hidden_size` channels are kept.
    """

    layers: tuple[int, ...]
    mlp_sizes: tuple[int, ...]
    num_heads: tuple[int, ...]
    hidden_size: int

    def __post_init__(self) -> None:
        # Accept lists (from JSON or YAML) but store tuples so instances stay hashable. Only whole numbers:
        # int() would silently turn 0.9 into 0 and True into 1.
        for name in ("layers", "mlp_sizes", "num_heads"):
            values = getattr(self, name)
            if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
                raise InvalidSubNetworkError(
                    f"A SubNetwork's layers, mlp_sizes and num_heads are lists of integers; {name} is {values!r}."
                )
            object.__setattr__(self, name, tuple(_whole(v, name) for v in values))
        object.__setattr__(self, "hidden_size", _whole(self.hidden_size, "hidden_size"))
        n = len(self.layers)
        if len(self.mlp_sizes) != n or len(self.num_heads) != n:
            raise InvalidSubNetworkError(
                f"SubNetwork needs one MLP size and one head count per kept layer: got {n} layers, "
                f"{len(self.mlp_sizes)} mlp_sizes and {len(self.num_heads)} num_heads."
            )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def is_uniform(self) -> bool:
        """True when every kept layer has the same MLP width and head count."""
        return len(set(self.mlp_sizes)) <= 1 and len(set(self.num_heads)) <= 1

    @classmethod
    def full(cls, shape: ModelShape) -> SubNetwork:
        """The whole super-network."""
        n = shape.num_layers
        return cls(tuple(range(n)), (shape.intermediate_size,) * n, (shape.num_heads,) * n, shape.hidden_size)

    def is_full(self, shape: ModelShape) -> bool:
        return self == SubNetwork.full(shape)

    def validate(self, shape: ModelShape) -> SubNetwork:
        """Raise `InvalidSubNetworkError` naming the field at fault if the model cannot hold this."""
        if not self.layers:
            raise InvalidSubNetworkError("SubNetwork keeps zero layers; keep at least one (layers=[0]).")
        if len(self.layers) > shape.num_layers:
            raise InvalidSubNetworkError(
                f"SubNetwork keeps {len(self.layers)} layers but the model has {shape.num_layers}."
            )
        bad = [i for i in self.layers if not 0 <= i < shape.num_layers]
        if bad:
            raise InvalidSubNetworkError(
                f"SubNetwork layer indices {bad} are outside the model's layers 0..{shape.num_layers - 1}."
            )
        if list(self.layers) != sorted(set(self.layers)):
            raise InvalidSubNetworkError(
                f"SubNetwork layers must be distinct and ascending (execution order): got {list(self.layers)}."
            )
        for pos, (layer, width) in enumerate(zip(self.layers, self.mlp_sizes)):
            if not 1 <= width <= shape.intermediate_size:
                raise InvalidSubNetworkError(
                    f"mlp_sizes[{pos}] (layer {layer}) = {width} is outside 1..{shape.intermediate_size}, "
                    "the model's intermediate_size."
                )
        for pos, (layer, heads) in enumerate(zip(self.layers, self.num_heads)):
            if heads > shape.num_heads:
                raise InvalidSubNetworkError(
                    f"num_heads[{pos}] (layer {layer}) = {heads} is above the model's {shape.num_heads} attention "
                    f"heads; the maximum is {shape.num_heads}."
                )
            if heads < 1 or heads % shape.group_size:
                allowed = list(range(shape.group_size, shape.num_heads + 1, shape.group_size))
                raise InvalidSubNetworkError(
                    f"num_heads[{pos}] (layer {layer}) = {heads} is not a whole number of KV groups; "
                    f"this model ({shape.num_heads} heads, {shape.num_kv_heads} KV heads) allows {allowed}."
                )
        if not 1 <= self.hidden_size <= shape.hidden_size:
            raise InvalidSubNetworkError(
                f"hidden_size = {self.hidden_size} is outside 1..{shape.hidden_size}, the model's hidden_size."
            )
        return self

    def num_kv_heads(self, shape: ModelShape) -> tuple[int, ...]:
        """KV heads of each kept layer."""
        return tuple(h // shape.group_size for h in self.num_heads)

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # Written out: `dataclasses.asdict` deep-copies every number, 0.1 ms a call with 30 layers (search trials
        # serialise each sub-network several times).
        return {
            "layers": list(self.layers),
            "mlp_sizes": list(self.mlp_sizes),
            "num_heads": list(self.num_heads),
            "hidden_size": self.hidden_size,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubNetwork:
        """A sub-network from its mapping, or from a record that holds one under `sub_network` (the
        `subnetwork.json` of an export or a quantized model)."""
        expected = {"layers", "mlp_sizes", "num_heads", "hidden_size"}
        if isinstance(data, dict) and isinstance(data.get("sub_network"), dict) and not expected & set(data):
            data = data["sub_network"]
        if not isinstance(data, dict):
            raise InvalidSubNetworkError(
                f"A SubNetwork is a mapping with the keys {sorted(expected)}; got a {type(data).__name__}."
            )
        missing, extra = expected - set(data), set(data) - expected
        if missing or extra:
            raise InvalidSubNetworkError(
                f"A SubNetwork needs exactly the keys {sorted(expected)}; missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}."
            )
        try:
            return cls(**data)
        except InvalidSubNetworkError:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidSubNetworkError(
                "A SubNetwork's layers, mlp_sizes and num_heads are lists of integers and hidden_size an "
                f"integer; got {data} ({exc})."
            ) from exc

    @classmethod
    def from_json(cls, text: str) -> SubNetwork:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> SubNetwork:
        """From a JSON file written by `save`, a `subnetwork.json` of an export, or an export's folder."""
        p = Path(path)
        if p.is_dir() and (p / EXPORT_RECORD).is_file():
            p = p / EXPORT_RECORD
        if not p.is_file():
            raise InvalidSubNetworkError(
                f"No sub-network file at {p}; pass a JSON file written by SubNetwork.save, or an exported model folder."
            )
        try:
            return cls.from_json(p.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidSubNetworkError(f"{p} is not valid JSON ({exc}).") from exc
        except InvalidSubNetworkError as exc:
            raise InvalidSubNetworkError(f"{p}: {exc}") from exc

    def describe(self) -> str:
        """A short human-readable summary, e.g. for tables and progress bars."""
        mlp = (
            str(self.mlp_sizes[0]) if len(set(self.mlp_sizes)) == 1 else f"{min(self.mlp_sizes)}-{max(self.mlp_sizes)}"
        )
        heads = (
            str(self.num_heads[0]) if len(set(self.num_heads)) == 1 else f"{min(self.num_heads)}-{max(self.num_heads)}"
        )
        return f"L={self.num_layers} mlp={mlp} heads={heads} d={self.hidden_size}"
