"""Evaluation of a model: perplexity (``perplexity``) and the lm-eval harness adapter (``lm_eval_adapter``).

Submodules import their heavy dependencies (lm_eval) lazily or on import of that submodule only; import
what you need from them directly, e.g. ``from cerebras_gpt.evaluate.perplexity import evaluate_perplexity``.
The experiment drivers that used to live here (sweep, scaling, coord_check) are `cerebras_gpt.experiments`'s;
their old import paths still work for one release, with a DeprecationWarning.
"""
