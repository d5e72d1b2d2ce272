"""Structured pruning: the stage's typed config (config.py); the algorithm is the stage (stages/prune.py)."""
