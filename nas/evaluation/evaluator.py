"""`Evaluator`: tasks built once per process, then `evaluate(model)` on whatever sub-network is active.

    evaluator = Evaluator.for_model(model, tokenizer, [load_task("arc_easy"), load_task("gsm8k")], limit=200)
    with model.sub_network(sub):
        results = evaluator.evaluate(model)          # {"arc_easy": TaskResult, "mmlu": TaskResult}
    results = evaluator.evaluate(model, sub)         # the same, activating `sub` for the call
    results["arc_easy"].score                        # the task's optimised metric (acc_norm)

Building has lm-eval's own task definitions read the documents and build their requests, tokenises them
like HFLM and packs them into length-sorted, prefix-shared batches; an evaluation only runs those batches
(and greedy generation, for `generate_until` tasks) through the live model, then lm-eval's filters and
metrics score the responses. Results are cached by (sub-network, task, limit, checkpoint), so a repeated
sub-network is never evaluated twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from nas.errors import NASError
from nas.evaluation.batching import CPU_FORWARD_COST, CUDA_FORWARD_COST
from nas.evaluation.built_task import BuiltTask, build_task
from nas.evaluation.generation import DEFAULT_MAX_GEN_TOKS, Generator
from nas.evaluation.lm_eval_results import lm_eval_layout
from nas.evaluation.loglikelihood import ForwardTimer, score_batches
from nas.evaluation.requests import RequestEncoder, max_length
from nas.evaluation.results import ResultsCache, TaskResult, sub_network_key, weights_fingerprint
from nas.evaluation.task import ItemSet, LMEvalTask, Selection

log = logging.getLogger(__name__)


class Evaluator:
    """Scores the live (sub-)network of a model on lm-eval tasks, item for item as lm-eval 0.4.13 scores them.

    Args:
        tasks: the tasks (e.g. from `load_task`: any lm-eval task, group or tag), or a mapping name -> task.
        tokenizer: the model's tokenizer.
        max_length: the model's maximum input length (inputs are cut from the left beyond it, as HFLM does).
        limit, limit_mode, seed, items: which items (`Selection`); fixed for the evaluator's life, so every
            sub-network of a study sees the same items. `limit` applies per group (MMLU subject); `items`
            is the item set drawn from: scored (the split lm-eval scores), search or confirm (disjoint).
        data_dir: the offline data folder (None: `$NAS_DATA_DIR`, else ../shared/data).
        batch_tokens: padded tokens per forward pass (batch size x longest row); None: 512 on CPU
            (larger batches do not run faster there), 16384 on CUDA.
        max_batch_size: rows per forward pass at most.
        share_prefix: read each document's context once for all its choices, and a prefix common to a
            whole group (MMLU subject, TruthfulQA's primer) or to all rows once per evaluation where that
            saves more than the forward passes it costs, and what a pooled group's rows share after that (an
            MMLU subject's words) once where it pays; for generation, the prefix a batch's contexts share (off:
            every request alone).
        min_group_prefix: shortest group prefix (tokens) considered for running once per evaluation.
        forward_cost: what one more forward pass costs, in tokens of a batch, to decide which prefixes
            pay (`built_task.plan_prefixes`) and where batches are cut (`batching.cheapest_cuts`); None: 16 on
            CPU (measured), 1024 on CUDA.
        generation_batch_tokens: padded context tokens per batch of `generate_until` requests.
        generation_batch_size: rows per batch of `generate_until` requests at most.
        max_gen_toks: generated tokens at most where a task does not say (HFLM's default, 256).
        bootstrap_iters: bootstrap resamples for the standard error of metrics without a closed form (lm-eval's
            `bootstrap_iters`); 0 (default): only closed-form standard errors (means), others "N/A".
        cache_file: JSON-lines file mirroring the results cache (None: memory only).
        progress: show a progress bar per evaluation.
    """

    def __init__(
        self,
        tasks: Sequence[LMEvalTask] | Mapping[str, LMEvalTask],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        *,
        limit: int | None = None,
        limit_mode: str = "first",
        seed: int = 0,
        items: str = "scored",
        data_dir: str | os.PathLike[str] | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int = 64,
        share_prefix: bool = True,
        min_group_prefix: int = 32,
        forward_cost: int | None = None,
        generation_batch_tokens: int = 16384,
        generation_batch_size: int = 16,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        bootstrap_iters: int = 0,
        cache_file: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        task_list = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
        if not task_list:
            raise NASError("No tasks to evaluate: pass at least one (e.g. task=arc_easy).")
        names = [t.name for t in task_list]
        if len(set(names)) != len(names):
            raise NASError(f"Task names must be unique; got {names}.")
        if (batch_tokens is not None and batch_tokens < 1) or max_batch_size < 1:
            raise NASError("batch_tokens and max_batch_size must be positive.")
        if forward_cost is not None and forward_cost < 0:
            raise NASError(
                f"forward_cost={forward_cost}: use a number of tokens >= 0, or null for the device's default."
            )
        if generation_batch_tokens < 1 or generation_batch_size < 1 or max_gen_toks < 1:
            raise NASError("generation_batch_tokens, generation_batch_size and max_gen_toks must be positive.")
        self.selection = Selection(limit, limit_mode, seed, items)
        self.data_dir = data_dir
        self.encoder = RequestEncoder(tokenizer, max_length)
        self.generator = Generator(
            tokenizer, max_length, generation_batch_tokens, generation_batch_size, max_gen_toks, share_prefix
        )
        self.bootstrap_iters = int(bootstrap_iters)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.forward_cost = forward_cost
        self.share_prefix = share_prefix
        self.progress = progress
        self.cache = ResultsCache(cache_file)
        start = time.perf_counter()
        self.tasks: dict[str, BuiltTask] = {
            t.name: build_task(
                t, self.encoder, self.generator, self.selection, data_dir, share_prefix, min_group_prefix
            )
            for t in task_list
        }
        self.build_seconds = time.perf_counter() - start
        self.last_timer = ForwardTimer()

    @classmethod
    def for_model(
        cls, model: Any, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[LMEvalTask], **options: Any
    ) -> Evaluator:
        """An evaluator whose maximum input length is the model's (as HFLM reads it from the config)."""
        return cls(tasks, tokenizer, max_length(model.config, tokenizer), **options)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def item_sets(self) -> dict[str, ItemSet]:
        """Which documents of which split each task scores (what a study records of its items)."""
        return {
            name: ItemSet(
                name, b.task.split_of(self.selection.items, self.data_dir), self.selection.items, tuple(b.doc_indices)
            )
            for name, b in self.tasks.items()
        }

    def lm_eval_results(self, results: Mapping[str, TaskResult], config: Mapping[str, Any] | None = None) -> dict:
        """`results` in lm-eval's layout (`results[task]["acc,none"]`, configs, versions, n-samples, ...)."""
        settings: dict[str, Any] = {
            "limit": self.selection.limit,
            "limit_mode": self.selection.mode,
            "items": self.selection.items,
        }
        settings |= {
            "bootstrap_iters": self.bootstrap_iters,
            "fewshot_seed": sorted({b.task.fewshot_seed for b in self.tasks.values()}),
        }
        return lm_eval_layout(self.tasks, results, {**settings, **(config or {})}, self.selection.items)

    def evaluate(
        self,
        model: Any,
        sub: Any = None,
        tasks: Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        with_items: bool = False,
    ) -> dict[str, TaskResult]:
        """Scores of the active sub-network (or of `sub`, activated for the call) on every task.

        Args:
            model: the elastic model (any causal LM works; its full network is then "full").
            sub: a `SubNetwork` to activate during the call; None evaluates whatever is active.
            tasks: names of a subset of the built tasks.
            checkpoint_id: names the weights in the cache key; None fingerprints them (a few ms).
            with_items: keep per-item log-likelihoods and predictions in the results.
        """
        if sub is not None:
            with model.sub_network(sub):
                return self.evaluate(model, None, tasks, checkpoint_id, with_items)
        names = list(self.tasks) if tasks is None else list(tasks)
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise NASError(f"Tasks {unknown} were not built by this evaluator; it has {list(self.tasks)}.")
        checkpoint = checkpoint_id or weights_fingerprint(model)
        sub_key = sub_network_key(model)
        self.last_timer = ForwardTimer()
        results = {}
        for name in names:
            built = self.tasks[name]
            key = ResultsCache.key(sub_key, built.task.identity(), self.selection.key(), checkpoint)
            cached = self.cache.get(key)
            if cached is not None and (cached.items or not with_items):
                results[name] = replace(cached, cached=True)
                continue
            timer = ForwardTimer()
            start = time.perf_counter()
            lls, greedy = np.zeros(0), np.zeros(0, dtype=bool)
            if built.num_requests:
                batches = built.batches(self._batch_tokens(model), self.max_batch_size, self._forward_cost(model))
                lls, greedy = score_batches(model, batches, built.num_requests, self.progress, name, timer)
            texts = self.generator.generate(model, [g for *_, g in built.generation], self.progress, name)
            result = built.score(built.responses(lls, greedy, texts), with_items, self.bootstrap_iters)
            result.seconds = time.perf_counter() - start
            result.forward_share = timer.forward_s / result.seconds if result.seconds > 0 else 0.0
            self._accumulate(timer)
            self.cache.put(key, result)
            results[name] = result
        return results

    def _batch_tokens(self, model: Any) -> int:
        if self.batch_tokens is not None:
            return self.batch_tokens
        return 16384 if next(model.parameters()).device.type == "cuda" else 512

    def _forward_cost(self, model: Any) -> int:
        if self.forward_cost is not None:
            return self.forward_cost
        return CUDA_FORWARD_COST if next(model.parameters()).device.type == "cuda" else CPU_FORWARD_COST

    def _accumulate(self, timer: ForwardTimer) -> None:
        total = self.last_timer
        total.forward_s += timer.forward_s
        total.total_s += timer.total_s
        total.tokens += timer.tokens
        total.forwards += timer.forwards
