"""Evaluation and model optimization: perplexity (``perplexity``), the lm-eval harness adapter
(``lm_eval_adapter``), scaling-law plans, ladders and fits (``scaling``), hyperparameter sweeps (``sweep``)
and the μP coordinate check (``coord_check``).

Submodules import their heavy dependencies (scipy, matplotlib, lm_eval) lazily or on import of that
submodule only; import what you need from them directly, e.g.
``from cerebras_gpt.evaluate.perplexity import evaluate_perplexity``.
"""
