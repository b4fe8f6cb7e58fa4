"""Experiment drivers that run training: hyperparameter sweeps (``sweep``, on Optuna), compute-optimal
scaling ladders and law fits (``scaling``) and the μP coordinate check (``coord_check``).

Evaluation of a trained model (perplexity, lm-eval) is `cerebras_gpt.evaluate`'s. Submodules import their
heavy dependencies (optuna, scipy, matplotlib) lazily or on import of that submodule only.
"""
