"""Evaluation: loss at 1-64x the training length, long-context probes, the recall study, and
lm-evaluation-harness benchmarks."""
