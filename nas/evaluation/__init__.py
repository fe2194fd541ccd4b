"""Evaluation of sub-networks: perplexity on plain text (and, later, lm-eval tasks, size and latency)."""
