"""The lm-evaluation-harness adapter: our model as the `cerebras_gpt` model type of `lm_eval`.

Cerebras-GPT's zero- and five-shot results come from EleutherAI's harness (facts file §4). This module
implements its `LM` interface on our `GPT` and tokenizer:

- ``loglikelihood``: requests are scored in batches through the KV cache. The distinct contexts of a
  batch are prefilled once each (multiple-choice tasks share one context among their choices), their
  cache rows copied to every request that shares them, and all continuations then run as one ragged
  batch at their own positions. Tokenization and truncation follow the harness's `TemplateLM` exactly
  (the whole string is encoded, trailing context spaces move to the continuation, an empty context is
  EOS), so the numbers equal the harness's own ``hf`` model on the same checkpoint.
- ``loglikelihood_rolling``: the harness's rolling windows (`lm_eval.utils.get_rolling_token_windows`)
  over the model's full context, scored through the same path.
- ``generate_until``: batched greedy (or sampled) decoding through `cerebras_gpt.generate`, stopping at
  the task's ``until`` strings or EOS.

Importing this module registers the model type: ``cerebras-gpt eval --tasks ...`` does, and
``python -m cerebras_gpt.evaluate.lm_eval_adapter --model cerebras_gpt --model_args pretrained=DIR
--tasks ...`` runs lm-eval's own command line with it registered. lm-eval 0.4.13 finds models only in
its built-in table (`lm_eval.models.MODEL_MAPPING`) and in modules already imported (`@register_model`);
it reads no entry points. `install_lm_eval_hook` writes a one-line ``.pth`` file that registers
``cerebras_gpt`` lazily when the ``lm_eval`` command starts, so plain ``lm_eval --model cerebras_gpt``
works too.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cerebras_gpt.extras import missing_extra

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own table first: get_model imports it only into an empty registry)
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ModuleNotFoundError as e:
    raise missing_extra("eval", e, feature="lm-eval tasks") from None

from cerebras_gpt.generation import SamplingParams, generate
from cerebras_gpt.model import GPT
from cerebras_gpt.runtime import autocast_context

log = logging.getLogger(__name__)

MODEL_NAME = "cerebras_gpt"


@register_model(MODEL_NAME)
class CerebrasGPTLM(TemplateLM):
    """`lm_eval` model over a Cerebras-GPT model directory, training checkpoint, hub id or a loaded `GPT`.

    Args:
        pretrained: model directory, training checkpoint or hub id (``--model_args pretrained=DIR``).
        model: an already loaded `GPT` (Python use), instead of ``pretrained``.
        tokenizer: its tokenizer (with ``model``); default GPT-2.
        batch_size: requests per forward pass (the harness passes ``--batch_size``).
        device: cpu, cuda, cuda:N or auto.
        dtype: float32, bfloat16, float16 or auto (bfloat16 on CUDA, float32 on CPU).
        max_length: context in tokens; default the model's block size.
        max_gen_toks: default most tokens to generate per ``generate_until`` request.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        model: GPT | None = None,
        tokenizer=None,
        batch_size: int | str = 8,
        device: str | None = "auto",
        dtype: str = "auto",
        max_length: int | None = None,
        max_gen_toks: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from cerebras_gpt.hf import load_model_and_tokenizer
        from cerebras_gpt.runtime import resolve_device_dtype
        from cerebras_gpt.tokenizer import load_tokenizer

        unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in ("max_batch_size",))
        if unknown:
            raise ValueError(
                f"cerebras_gpt model: unknown model_args {unknown}; valid are pretrained, batch_size, "
                "device, dtype, max_length, max_gen_toks"
            )
        dev, torch_dtype = resolve_device_dtype(device or "auto", dtype)
        if model is None:
            if pretrained is None:
                raise ValueError("cerebras_gpt model needs pretrained=DIR_OR_HUB_ID in --model_args")
            model, tokenizer = load_model_and_tokenizer(pretrained, device=dev, dtype=torch_dtype)
        self.model = model.eval()
        self.tok = tokenizer or load_tokenizer()
        self._device = self.model.transformer.wte.weight.device
        if str(batch_size).startswith("auto"):
            batch_size = 8  # no memory probe: a fixed batch that fits every preset on one GPU
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.max_length = int(max_length or self.model.config.block_size)
        if not 2 <= self.max_length <= self.model.config.block_size:
            raise ValueError(f"max_length={max_length} must be in [2, {self.model.config.block_size}]")
        self.max_gen_toks = int(max_gen_toks)

    # ----- what TemplateLM needs ------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)  # GPT-2 adds no BOS

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    # ----- scoring ----------------------------------------------------------------------
    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        """(log P(continuation | context), is_greedy) per request, in the order given."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        # Longest first (errors on memory show at once), same contexts adjacent (shared prefill).
        order = sorted(
            range(len(requests)), key=lambda i: (-len(requests[i][1]) - len(requests[i][2]), tuple(requests[i][1]))
        )
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            pairs = [self._truncate(requests[i][1], requests[i][2]) for i in idx]
            for i, answer in zip(idx, self._score_batch(pairs)):
                results[i] = answer
                self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def _truncate(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Keep the last ``max_length + 1`` tokens of context + continuation, as the harness's HFLM does."""
        if not continuation:
            raise ValueError("a loglikelihood request has an empty continuation")
        whole = (context + continuation)[-(self.max_length + 1) :]
        return whole[: len(whole) - len(continuation)], whole[len(whole) - len(continuation) :]

    @torch.inference_mode()
    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Score (context, continuation) pairs: distinct contexts prefilled once, continuations batched."""
        device, model = self._device, self.model
        contexts: dict[tuple[int, ...], int] = {}
        src = [contexts.setdefault(tuple(ctx), len(contexts)) for ctx, _ in pairs]
        unique = list(contexts)
        B, U = len(pairs), len(unique)
        ctx_len = torch.tensor([len(c) for c in unique], device=device)
        cont_len = [len(cont) for _, cont in pairs]
        L_max = int(ctx_len.max())
        span = max(L_max, *(len(ctx) + len(cont) - 1 for ctx, cont in pairs))  # <= max_length (see _truncate)
        model.setup_kv_cache(B, span, device=device)
        try:
            # 1. Prefill each distinct context once (ragged, right-padded: padding only writes slots past the
            #    row's context, which its continuation overwrites before any real token looks at them).
            tokens = torch.zeros(U, L_max, dtype=torch.long)
            for row, ctx in enumerate(unique):
                tokens[row, : len(ctx)] = torch.tensor(ctx)
            positions = torch.arange(L_max, device=device).expand(U, L_max)
            with autocast_context(self._device):
                first = model(
                    tokens.to(device), positions, logits_index=ctx_len - 1, cache_rows=torch.arange(U, device=device)
                )[:, 0]  # (U, V)
            # 2. Every request row gets the cache of its context.
            src_rows = torch.tensor(src, device=device)
            model.copy_cache_rows(torch.arange(B, device=device), src_rows)
            logits = [first[src_rows].float().unsqueeze(1)]  # predicts continuation token 0: (B, 1, V)
            # 3. Continuation tokens 0..m-2 at positions L..L+m-2 of their row predict tokens 1..m-1. A shorter
            #    row is padded by repeating its last input at its last position: the same key and value written
            #    to the same slot again, so padding never lands in a slot a real token attends to.
            M = max(cont_len)
            if M > 1:
                conts = torch.zeros(B, M - 1, dtype=torch.long)
                pos = torch.zeros(B, M - 1, dtype=torch.long)
                for row, (ctx, cont) in enumerate(pairs):
                    inputs = list(ctx[-1:]) + list(cont[:-1])  # the last context token stands in when m == 1
                    places = list(range(len(ctx) - 1, len(ctx) + len(cont) - 1))
                    real = len(cont) - 1
                    conts[row, :real] = torch.tensor(inputs[1:], dtype=torch.long)
                    pos[row, :real] = torch.tensor(places[1:], dtype=torch.long)
                    conts[row, real:] = inputs[-1]
                    pos[row, real:] = places[-1]
                with autocast_context(self._device):
                    logits.append(model(conts.to(device), pos.to(device)).float())
            logprobs = F.log_softmax(torch.cat(logits, dim=1), dim=-1)  # (B, M, V)
        finally:
            model.clear_kv_cache()
        out = []
        for row, (_, cont) in enumerate(pairs):
            lp = logprobs[row, : len(cont)]
            target = torch.tensor(cont, device=device)
            out.append((float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents: the harness's disjoint rolling windows over the full context."""
        windows, owner = [], []
        for n, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append(((None, None), ctx, cont))
                owner.append(n)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm) if windows else []
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, scores):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ----- generation -------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations of each context until one of its ``until`` strings (or EOS), batched by settings."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or self.rank != 0)
        for members in groups.values():
            params = self._sampling(requests[members[0]].args[1])
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                texts = generate(self.model, self.tok, [requests[i].args[0] for i in batch], params)
                for i, text in zip(batch, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    def _sampling(self, gen_kwargs: dict[str, Any]) -> SamplingParams:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", None) or kwargs.pop("max_new_tokens", None) or self.max_gen_toks)
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0))
        sampling = SamplingParams(
            max_new_tokens=min(max_new, self.max_length - 1),
            temperature=temperature if do_sample else 0.0,
            top_k=kwargs.pop("top_k", None),
            top_p=float(kwargs.pop("top_p", None) or 1.0),
            stop=[s for s in until if s],
            truncate_prompt=True,
            seed=kwargs.pop("seed", None),
        )
        if kwargs:
            log.warning("cerebras_gpt: ignoring generation settings %s", sorted(kwargs))
        return sampling


# ----------------------------------------------------------------------------- running tasks
def run_tasks(
    lm: CerebrasGPTLM,
    tasks: list[str],
    include_path: list[str] | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    log_samples: bool = False,
    seed: int = 1234,
) -> dict[str, Any]:
    """Run harness tasks (names, or task YAMLs found under ``include_path``) on ``lm``; lm-eval's result dict."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = None
    if include_path:  # indexing lm-eval's thousands of built-in YAMLs takes seconds: skip it when not needed
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if any(t not in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=include_path or None)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(
            f"unknown lm-eval task(s) {missing}: check the names (`lm_eval ls tasks`) or pass "
            "--include-path with the directory of your task YAMLs"
        )
    try:
        return simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            batch_size=lm.batch_size,
        )
    except Exception as e:
        from cerebras_gpt.errors import is_network_error, network_message

        if is_network_error(e):  # the task's dataset is not in the local cache
            raise ValueError(network_message(f"the dataset of lm-eval task(s) {tasks}", e)) from e
        raise


# ----------------------------------------------------------------------------- `lm_eval` command
_HOOK = "cerebras_gpt_lm_eval.pth"
# One line (site.py executes .pth lines that start with "import"): only when the running program is the
# lm_eval/lm-eval command, register our model lazily (a "module:Class" string) beside lm-eval's own table.
_HOOK_LINE = (
    'import sys; exec("try:\\n import lm_eval.models, lm_eval.api.registry as _r\\n '
    "_r.model_registry.register('cerebras_gpt', target='cerebras_gpt.evaluate.lm_eval_adapter:CerebrasGPTLM')"
    "\\nexcept Exception:\\n pass\") if sys.argv and sys.argv[0].replace('-', '_').endswith('lm_eval') else None\n"
)


def install_lm_eval_hook(site_dir: str | None = None) -> str:
    """Write the ``.pth`` file that makes ``lm_eval --model cerebras_gpt`` work; returns its path.

    lm-eval 0.4.13 discovers models only in its built-in table and in modules already imported, and reads
    no entry points, so the command needs our class registered before it looks the name up.
    """
    import sysconfig
    from pathlib import Path

    path = Path(site_dir or sysconfig.get_paths()["purelib"]) / _HOOK
    path.write_text(_HOOK_LINE)
    return str(path)


def cli(argv: list[str] | None = None) -> None:
    """lm-eval's own command line with the ``cerebras_gpt`` model type registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    cli()


__all__ = ["CerebrasGPTLM", "MODEL_NAME", "run_tasks", "install_lm_eval_hook", "cli"]
