"""Task metrics on held-out prompt/completion records: label log-likelihood accuracy, exact match, ROUGE-L.

- Classification (e.g. sentiment): each record's completion is one of a few label words; the model's
  answer is the label whose tokens have the highest total log-likelihood after the prompt (the way
  lm-eval scores multiple choice), so an untrained model is scored fairly without having to generate.
- Generation (summarization, translation, synthetic string tasks): greedy decoding through
  `cerebras_gpt.generate`, scored by exact match (whitespace-stripped) and ROUGE-L F1 from Google's
  `rouge-score` package (the reference implementation used by the summarization literature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cerebras_gpt.extras import require_extra
from cerebras_gpt.model import GPT


def check_prompt_records(records: Sequence[dict], where: str) -> None:
    for i, r in enumerate(records):
        if not (isinstance(r.get("prompt"), str) and isinstance(r.get("completion"), str)):
            raise ValueError(f"{where} record {i}: task evaluation needs {{'prompt', 'completion'}} records")


@torch.no_grad()
def label_logprobs(
    model: GPT, tokenizer, prompts: Sequence[str], labels: Sequence[str], batch_size: int = 32
) -> torch.Tensor:
    """Summed log-probability of each label's tokens after each prompt: (len(prompts), len(labels))."""
    device = model.transformer.wte.weight.device
    was_training = model.training
    model.eval()
    label_ids = [tokenizer.encode(label) for label in labels]
    pairs = [(tokenizer.encode(p), li) for p in prompts for li in label_ids]
    block = model.config.block_size
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = [
            (p[-(block - len(li)) :] if len(p) + len(li) > block else p, li)
            for p, li in pairs[start : start + batch_size]
        ]
        T = max(len(p) + len(li) for p, li in chunk)
        x = torch.zeros(len(chunk), T, dtype=torch.long)
        for i, (p, li) in enumerate(chunk):
            x[i, : len(p) + len(li)] = torch.tensor(p + li)
        logp = model(x.to(device)).float().log_softmax(-1)  # (B, T, V)
        for i, (p, li) in enumerate(chunk):
            pos = torch.arange(len(p) - 1, len(p) + len(li) - 1, device=device)  # positions predicting the label
            scores.append(logp[i, pos, torch.tensor(li, device=device)].sum().item())
    model.train(was_training)
    return torch.tensor(scores).view(len(prompts), len(labels))


def classification_metrics(
    model: GPT, tokenizer, records: Sequence[dict], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy of the highest-likelihood label; ``labels`` default to the distinct completions."""
    check_prompt_records(records, "classification")
    labels = list(labels) if labels else sorted({r["completion"] for r in records})
    unknown = sorted({r["completion"] for r in records} - set(labels))
    if unknown:
        raise ValueError(f"completions {unknown[:5]} are not among the labels {labels}; fix --labels")
    scores = label_logprobs(model, tokenizer, [r["prompt"] for r in records], labels)
    predicted = scores.argmax(dim=1).tolist()
    correct = sum(labels[p] == r["completion"] for p, r in zip(predicted, records))
    return {"accuracy": correct / len(records), "n": len(records), "labels": labels}


def generation_metrics(
    model: GPT,
    tokenizer,
    records: Sequence[dict],
    max_new_tokens: int | None = None,
    stop: Sequence[str] = (),
    batch_size: int = 32,
) -> dict[str, Any]:
    """Greedy generations scored by exact match and ROUGE-L F1 (mean over records)."""
    require_extra("eval", "rouge_score", feature="ROUGE-L task metrics")
    from rouge_score import rouge_scorer

    from cerebras_gpt.generation import SamplingParams, generate

    check_prompt_records(records, "generation")
    if max_new_tokens is None:  # room for the longest reference and its EOS
        max_new_tokens = max(len(tokenizer.encode(r["completion"])) for r in records) + 4
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=list(stop), truncate_prompt=True)
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(records), batch_size):
        outputs += generate(model, tokenizer, [r["prompt"] for r in records[start : start + batch_size]], params)
    model.train(was_training)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    exact = sum(o.strip() == r["completion"].strip() for o, r in zip(outputs, records))
    rouge = sum(scorer.score(r["completion"].strip(), o.strip())["rougeL"].fmeasure for o, r in zip(outputs, records))
    return {
        "exact_match": exact / len(records),
        "rouge_l": rouge / len(records),
        "n": len(records),
        "examples": [
            {"prompt": r["prompt"], "reference": r["completion"], "output": o} for o, r in zip(outputs[:3], records[:3])
        ],
    }


def task_metrics(
    task: str,
    model: GPT,
    tokenizer,
    records: Sequence[dict],
    labels: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    stop: Sequence[str] = (),
) -> dict[str, Any]:
    """Metrics of ``task`` ('classification' or 'generation') on ``records``."""
    if task == "classification":
        return classification_metrics(model, tokenizer, records, labels)
    if task == "generation":
        return generation_metrics(model, tokenizer, records, max_new_tokens, stop)
    raise ValueError(f"task={task!r} must be classification or generation")


__all__ = ["classification_metrics", "generation_metrics", "label_logprobs", "task_metrics"]
