"""Pruning methods the searched fronts are compared with (LLM-Pruner, SliceGPT, 2:4 magnitude / Wanda /
SparseGPT) and two controls (layer drop by block influence, the importance width cut without search).
Each is a `Baseline` (`nas.baselines.base`) selected by the `baseline/` config group."""
