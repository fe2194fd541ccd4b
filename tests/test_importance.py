"""Importance scores and the reordering they drive: function unchanged, important parts first (tiny_llama, CPU)."""

from __future__ import annotations

import pytest
import torch

from nas import SearchSpace, SubNetwork, load_model
from nas.evaluation.perplexity import perplexity
from nas.supernet.importance import ImportanceError, ImportanceScores, compute_importance, descending_order
from nas.supernet.permutation import reorder_by_importance

KLEIN = {
    "name": "klein",
    "num_layers": {"choices": [0.5, 1.0]},
    "mlp": {"choices": [0.25, 1.0]},
    "heads": {"choices": [0.25, 1.0]},
    "hidden": {"choices": [0.5, 1.0], "multiple_of": 8},
}
LAYERS_ONLY = {"name": "layers_only", "num_layers": {"choices": [0.5, 1.0]}}


def calibration_batches(seed: int = 0, rows: int = 8, seq_len: int = 32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 256, (rows, seq_len), generator=generator).split(4))


def top(values: list[float], k: int) -> set[int]:
    return set(descending_order(values)[:k])


@pytest.mark.parametrize("tied", [True, False])
def test_reordering_keeps_the_full_models_logits(tied):
    model, _ = load_model("tiny_llama", tie_word_embeddings=tied, seed=3)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits
    _, perms = reorder_by_importance(model, compute_importance(model, calibration_batches(), progress=False))
    with torch.no_grad():
        after = model(ids).logits
    # Every dimension really moved, so the equality below is not vacuous.
    assert perms.hidden != sorted(perms.hidden)
    assert any(p != sorted(p) for p in perms.mlp)
    assert any(p != sorted(p) for p in perms.heads)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_smallest_sub_network_keeps_the_highest_scored_parts():
    model, _ = load_model("tiny_llama")
    scores = compute_importance(model, calibration_batches(), progress=False)
    new_scores, perms = reorder_by_importance(model, scores)
    smallest = SearchSpace.from_config(KLEIN, model.config).smallest()
    shape = model.shape
    k_mlp, k_groups = smallest.mlp_sizes[0], smallest.num_heads[0] // shape.group_size
    assert (
        k_mlp < shape.intermediate_size and k_groups < shape.num_kv_heads and smallest.hidden_size < shape.hidden_size
    )
    for layer in range(shape.num_layers):
        assert set(perms.mlp[layer][:k_mlp]) == top(scores.mlp[layer], k_mlp)
        assert set(perms.heads[layer][:k_groups]) == top(scores.heads[layer], k_groups)
    assert set(perms.hidden[: smallest.hidden_size]) == top(scores.hidden, smallest.hidden_size)
    # Scoring the reordered model again finds the moved weights where the permutation put them.
    again = compute_importance(model, calibration_batches(), progress=False)
    for layer in range(shape.num_layers):
        assert again.mlp[layer] == pytest.approx(new_scores.mlp[layer], rel=1e-4)
        assert again.heads[layer] == pytest.approx(new_scores.heads[layer], rel=1e-4)
    assert again.hidden == pytest.approx(new_scores.hidden, rel=1e-4)
    assert new_scores.hidden == sorted(new_scores.hidden, reverse=True)


def weaken_layer(model, index: int, factor: float = 1e-3) -> None:
    """Make layer `index` barely change the residual stream."""
    layer = model.model.layers[index]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.mul_(factor)
        layer.mlp.down_proj.weight.mul_(factor)


def test_layer_order_is_stored_used_by_the_search_space_and_survives_saving(tmp_path):
    model, tokenizer = load_model("tiny_llama", tie_word_embeddings=False)
    weaken_layer(model, 0)
    scores = compute_importance(model, calibration_batches(), progress=False)
    reorder_by_importance(model, scores)
    order = model.config.nas_layer_order
    assert order == scores.layer_order() and order[-1] == 0  # the weakened layer is the least important
    smallest = SearchSpace.from_config(LAYERS_ONLY, model.config).smallest()
    assert smallest.layers == tuple(sorted(order[:2])) and 0 not in smallest.layers

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = load_model(str(tmp_path))
    assert reloaded.config.nas_layer_order == order
    assert SearchSpace.from_config(LAYERS_ONLY, reloaded.config).smallest() == smallest
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
        with model.sub_network(smallest), reloaded.sub_network(smallest):
            torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_reordering_lowers_the_loss_of_a_mid_sized_mlp_sub_network():
    # On random weights, real text says nothing; text sampled from the full model does: a sub-network's
    # loss on it is the full model's entropy plus how far the sub-network strays from the full model.
    model, _ = load_model("tiny_llama", seed=2)
    torch.manual_seed(0)
    with torch.no_grad():
        ids = model.generate(
            torch.randint(0, 256, (16, 1)), do_sample=True, top_k=0, max_new_tokens=63, min_new_tokens=63,
            pad_token_id=0, eos_token_id=None,
        )  # fmt: skip
    half = SubNetwork(tuple(range(4)), (64,) * 4, (4,) * 4, 64)

    def loss() -> float:
        with model.sub_network(half):
            return perplexity(model, ids.flatten(), seq_len=64, batch_size=16, progress=False).nll

    before = loss()
    reorder_by_importance(model, compute_importance(model, list(ids.split(8)), progress=False))
    assert loss() < before - 0.02


def test_neurons_made_large_are_moved_first():
    model, _ = load_model("tiny_llama")
    chosen = [5, 17, 64, 100, 127]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[chosen] *= 5
    _, perms = reorder_by_importance(model, compute_importance(model, calibration_batches(), progress=False))
    for layer_perm in perms.mlp:
        assert sorted(layer_perm[: len(chosen)]) == chosen


def test_scoring_runs_the_full_network_and_restores_the_active_sub_network():
    model, _ = load_model("tiny_llama")
    full_scores = compute_importance(model, calibration_batches(), progress=False)
    sub = SubNetwork((0, 1), (32, 32), (2, 2), 32)
    with model.sub_network(sub):
        scores = compute_importance(model, calibration_batches(), progress=False)
        assert model.active_sub_network == sub
        with pytest.raises(ImportanceError, match="reset_super_network"):
            reorder_by_importance(model, scores)
    assert scores == full_scores
    assert scores.num_tokens == 8 * 32 and model.training is False


def test_scores_round_trip_through_json_and_refuse_another_shape(tmp_path):
    model, _ = load_model("tiny_llama")
    scores = compute_importance(model, calibration_batches(), progress=False)
    scores.save(tmp_path / "scores.json")
    assert ImportanceScores.load(tmp_path / "scores.json") == scores
    other, _ = load_model("tiny_llama", intermediate_size=96)
    with pytest.raises(ImportanceError, match=r"mlp\[0\] has 128 entries, the model 96"):
        reorder_by_importance(other, scores)
    with pytest.raises(ImportanceError, match="python -m nas.reorder"):
        ImportanceScores.load(tmp_path / "missing.json")


def test_reordering_keeps_the_logits_of_a_biased_qwen2():
    # Qwen2's q/k/v biases and an MLP bias-free tree: biases move with their rows.
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nas.supernet.elastic_model import make_elastic

    config = Qwen2Config(
        vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = make_elastic(Qwen2ForCausalLM(config).eval())
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        before = model(ids).logits
    _, perms = reorder_by_importance(model, compute_importance(model, calibration_batches(), progress=False))
    assert any(p != sorted(p) for p in perms.heads) and model.model.layers[0].self_attn.q_proj.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, atol=1e-5, rtol=0)
