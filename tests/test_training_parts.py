"""Training pieces: Alpaca prompts and masking, samplers, strategies' passes and gradients, bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from nas import SearchSpace, SubNetwork
from nas.data.instructions import (
    IGNORE_INDEX,
    PROMPT_NO_INPUT,
    DataFormatError,
    alpaca_prompt,
    collate,
    load_alpaca_records,
    tokenize_record,
)
from nas.errors import DataNotFoundError, NASError
from nas.training.batch_stream import ResumableBatchSampler
from nas.training.samplers import CalibrateMagSampler, GridParamsSampler, UniformSampler, weight_magnitude
from nas.training.strategies import (
    AlternatingStrategy,
    RandomStrategy,
    SandwichStrategy,
    StandardStrategy,
    distill_loss,
    lm_loss,
)

KLEIN = OmegaConf.load("conf/search_space/klein.yaml")


def test_alpaca_prompt_follows_the_stanford_template():
    assert alpaca_prompt({"instruction": "Add 2 and 3.", "output": "5"}) == PROMPT_NO_INPUT.format(
        instruction="Add 2 and 3."
    )
    with_input = alpaca_prompt({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"})
    assert "### Input:\nBonjour\n\n### Response:\n" in with_input and "paired with an input" in with_input


def test_loss_only_on_the_response(tiny):
    _, tokenizer = tiny
    record = {"instruction": "Say hi.", "output": "hi"}
    example = tokenize_record(record, tokenizer, max_length=512, train_on_prompt=False)
    targets = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(targets) == "hi" + tokenizer.eos_token
    batch = collate([example, tokenize_record(record, tokenizer, 40, True)], pad_token_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(example.input_ids))
    assert batch["attention_mask"][1].sum() == 40 and (batch["labels"][1, 40:] == IGNORE_INDEX).all()


def test_bad_data_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "no output"}]))
    with pytest.raises(DataFormatError, match=r"bad.json, record 1: missing \['output'\]"):
        load_alpaca_records("local", str(bad), "tatsu-lab/alpaca", None)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataFormatError, match="broken.json is not valid JSON"):
        load_alpaca_records("local", str(tmp_path / "broken.json"), "", None)
    with pytest.raises(DataNotFoundError, match="missing.json"):
        load_alpaca_records("local", str(tmp_path / "missing.json"), "", None)


def test_batch_stream_is_deterministic_and_resumes_at_any_batch():
    full = ResumableBatchSampler(10, 3, seed=1)
    stream = iter(full)
    first = [next(stream) for _ in range(7)]  # crosses into the third epoch
    resumed = iter(ResumableBatchSampler(10, 3, seed=1, start=4))
    assert [next(resumed) for _ in range(3)] == first[4:]
    epoch = sum(first[:3], [])
    assert len(set(epoch)) == 9 and epoch != sorted(epoch)  # distinct items, shuffled
    assert sum(first[3:6], []) != epoch  # each epoch has its own order


@pytest.fixture()
def space(tiny):
    model, _ = tiny
    return SearchSpace.from_config(KLEIN, model.config)


def test_samplers_are_seeded_and_restorable(space):
    a, b = UniformSampler(space, seed=3), UniformSampler(space, seed=3)
    assert [a.sample() for _ in range(5)] == [b.sample() for _ in range(5)]
    state = a.state_dict()
    expected = [a.sample() for _ in range(5)]
    c = UniformSampler(space, seed=99)
    c.load_state_dict(json.loads(json.dumps(state)))  # survives a checkpoint's serialisation
    assert [c.sample() for _ in range(5)] == expected


def test_grid_params_spreads_samples_over_sizes(space):
    grid = GridParamsSampler(space, seed=0, num_bins=4)
    uniform = UniformSampler(space, seed=0)
    grid_bins = Counter(grid.bin_of(grid.sample()) for _ in range(400))
    uniform_bins = Counter(grid.bin_of(uniform.sample()) for _ in range(400))
    assert set(grid_bins) == {0, 1, 2, 3}
    assert max(grid_bins.values()) / min(grid_bins.values()) < 1.6  # about equal per bin
    assert max(uniform_bins.values()) / max(1, min(uniform_bins.values())) > max(grid_bins.values()) / min(
        grid_bins.values()
    )


@pytest.mark.parametrize("keep", [1, 2])
def test_calibrate_mag_keeps_the_largest_magnitude_per_bin(tiny, space, keep):
    model, _ = tiny
    sampler = CalibrateMagSampler(space, model, seed=0, num_bins=3, candidates_per_bin=15, keep_per_bin=keep)
    # The candidates it recorded are the ones its seeded stream draws: the same stream gives the same ones.
    replay = GridParamsSampler(space, seed=0, num_bins=3)
    for target, (kept, candidates) in enumerate(zip(sampler.pool, sampler.candidates)):
        assert candidates == list(dict.fromkeys(replay.sample_in_bin(target) for _ in range(15)))
        assert len(candidates) > keep and all(sampler.bin_of(c) == target for c in candidates)
        magnitude = {c: weight_magnitude(model, c) for c in candidates}
        assert len(set(magnitude.values())) > 1  # the choice matters
        # The kept ones are the `keep` largest magnitudes among all the candidates of the bin.
        assert len(kept) == keep and set(kept) <= set(candidates)
        assert sorted((magnitude[k] for k in kept), reverse=True) == sorted(magnitude.values(), reverse=True)[:keep]
    assert {sampler.sample() for _ in range(30)} <= {s for kept in sampler.pool for s in kept}


class Recorder:
    """Counts the (sub-)networks a strategy runs and the backward calls."""

    def __init__(self, model):
        self.model, self.subs, self.backwards = model, [], 0

    def backward(self, loss):
        self.subs.append(self.model.active_sub_network)
        self.backwards += 1
        loss.backward()


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (StandardStrategy(), ["full"]),
        (RandomStrategy(k=2), ["sub", "sub"]),
        # klein's largest sub-network is the full network
        (SandwichStrategy(k=2), ["full", "sub", "sub", "smallest"]),
        (SandwichStrategy(k=1, distill=True), ["full", "sub", "smallest"]),
    ],
)
def test_strategy_passes(tiny, tiny_inputs, space, strategy, expected):
    model, _ = tiny
    batch = {**tiny_inputs, "labels": tiny_inputs["input_ids"]}
    recorder = Recorder(model)
    losses = strategy.step(model, batch, UniformSampler(space, seed=0), recorder.backward, step=0)
    names = []
    for sub in recorder.subs:
        names.append("full" if sub is None else "smallest" if sub == space.smallest() else "sub")
    assert names == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.active_sub_network is None
    model.zero_grad(set_to_none=True)


def test_alternating_alternates_per_optimizer_step(tiny, tiny_inputs, space):
    model, _ = tiny
    batch = {**tiny_inputs, "labels": tiny_inputs["input_ids"]}
    strategy, sampler = AlternatingStrategy(), UniformSampler(space, seed=0)
    seen = []
    for step in (0, 1, 1, 2, 3):
        recorder = Recorder(model)
        strategy.step(model, batch, sampler, recorder.backward, step)
        seen.append(recorder.subs[0])
    assert seen[0] is None and seen[3] is None  # even steps: the full network
    assert seen[1] is not None and seen[1] == seen[2]  # one sub-network per step, shared by micro-batches
    model.zero_grad(set_to_none=True)


def test_distillation_changes_the_sub_network_gradient(tiny, tiny_inputs, space):
    model, _ = tiny
    batch = {**tiny_inputs, "labels": tiny_inputs["input_ids"]}
    grads = []
    for distill in (False, True):
        model.zero_grad(set_to_none=True)
        SandwichStrategy(k=0, distill=distill).step(
            model, batch, UniformSampler(space), lambda loss: loss.backward(), 0
        )
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad[:32].clone())
    assert not torch.allclose(grads[0], grads[1])
    model.zero_grad(set_to_none=True)


def test_alternating_distillation_learns_the_full_network_distribution(tiny, tiny_inputs, space):
    model, _ = tiny
    batch = {**tiny_inputs, "labels": tiny_inputs["input_ids"]}
    sub = SubNetwork((0, 2), (64, 64), (2, 2), 48)
    with torch.no_grad():
        teacher = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with model.sub_network(sub):
            student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sampler = UniformSampler(space)
    sampler.sample = lambda: sub  # type: ignore[method-assign]
    trained, grads = {}, {}
    for distill in (False, True):
        model.zero_grad(set_to_none=True)
        recorder = Recorder(model)
        strategy = AlternatingStrategy(distill=distill)

        def backward(loss, recorder=recorder, distill=distill):
            trained[distill] = loss.detach()
            recorder.backward(loss)

        losses = strategy.step(model, batch, sampler, backward, step=1)  # odd step: the sub-network
        assert recorder.subs == [sub] and torch.isfinite(losses["loss/sub"])
        grads[distill] = model.model.layers[0].mlp.up_proj.weight.grad[:32].clone()
    # Without distillation the sub-network trains on cross-entropy; with it, on the KL to the full network.
    torch.testing.assert_close(trained[False], lm_loss(student, batch["labels"]))
    torch.testing.assert_close(trained[True], distill_loss(student, teacher, batch["labels"]))
    assert not torch.allclose(grads[False], grads[True])
    assert model.active_sub_network is None
    model.zero_grad(set_to_none=True)


def test_default_data_file_missing_falls_back_to_the_hub(tmp_path, monkeypatch):
    import datasets

    hub = [{"instruction": "Say hi.", "output": "hi"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, split: hub)
    assert load_alpaca_records("auto", None, "tatsu-lab/alpaca", str(tmp_path)) == hub  # no alpaca/ in tmp_path
    with pytest.raises(DataNotFoundError, match="missing.json"):  # a file named explicitly never falls back
        load_alpaca_records("auto", str(tmp_path / "missing.json"), "tatsu-lab/alpaca", str(tmp_path))


@pytest.mark.parametrize("make", [lambda: RandomStrategy(k=0), lambda: SandwichStrategy(k=-1)])
def test_bad_k_is_rejected(make):
    with pytest.raises(NASError, match="strategy.k="):
        make()


def test_sub_network_gradient_only_on_its_slices(tiny, tiny_inputs, space):
    model, _ = tiny
    batch = {**tiny_inputs, "labels": tiny_inputs["input_ids"]}
    model.zero_grad(set_to_none=True)
    sampler = UniformSampler(space)
    sampler.sample = lambda: SubNetwork((0, 1), (32, 32), (2, 2), 32)  # type: ignore[method-assign]
    RandomStrategy(k=1).step(model, batch, sampler, lambda loss: loss.backward(), 0)
    assert all(p.grad is None for p in model.model.layers[3].parameters())
    assert model.model.layers[0].mlp.up_proj.weight.grad[32:].abs().sum() == 0
    model.zero_grad(set_to_none=True)


def test_packing_fills_whole_sequences_and_keeps_labels(tiny):
    from nas.data.instructions import pack

    _, tokenizer = tiny
    records = [{"instruction": f"Question {i}?", "output": "answer " * i} for i in range(1, 8)]
    examples = [tokenize_record(r, tokenizer, 512, False) for r in records]
    packed = pack(examples, 64)
    assert packed and all(len(e.input_ids) == len(e.labels) == 64 for e in packed)
    flat_ids = sum((e.input_ids for e in examples), [])
    flat_labels = sum((e.labels for e in examples), [])
    assert sum((e.input_ids for e in packed), []) == flat_ids[: 64 * len(packed)]
    assert sum((e.labels for e in packed), []) == flat_labels[: 64 * len(packed)]


def test_batch_stream_splits_global_batches_between_processes():
    single = iter(ResumableBatchSampler(12, 2, seed=5))
    global_batches = [next(single) for _ in range(8)]
    ranks = [iter(ResumableBatchSampler(12, 2, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    per_rank = [[next(it) for _ in range(4)] for it in ranks]
    assert per_rank[0] == global_batches[0::2] and per_rank[1] == global_batches[1::2]
    resumed = iter(ResumableBatchSampler(12, 2, seed=5, start=2, rank=1, world_size=2))
    assert next(resumed) == global_batches[5]
