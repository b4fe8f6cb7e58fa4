"""Batch-size schedules: the global batch changing at given steps or token counts.

The ModelZoo trained Cerebras-GPT 13B for 57,000 steps at 720 sequences, then switched to 1080 for the
remaining 78,223 steps (facts file §2, [MZR]: "57k steps at bs720 ... reset the step to 38k ... finished
with 13b_bs1080.yaml, max_steps 116223"), with the learning rate a function of tokens seen, so the switch
leaves it unchanged. GPT-3's batch ramp is the same thing with more phases.

A schedule is written ``"B0,B1@S1,B2@S2"``: ``B0`` sequences from step 0, ``B1`` from step ``S1``, and so
on; a start written ``Ntok`` (``"64@2e6tok"``) is a token count, and the phase begins at the first step
that starts with at least that many tokens seen. Resolved against the sequence length it becomes a list of
`BatchPhase` (start step, global batch) that the plan and the loop follow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ENTRY = re.compile(r"^\s*(\d+)\s*(?:@\s*([0-9.eE+_]+)\s*(tok)?)?\s*$")


@dataclass(frozen=True)
class BatchPhase:
    """From optimizer step ``start_step`` on, ``global_batch`` sequences per step (all ranks)."""

    start_step: int
    global_batch: int


def parse(spec: str, seq_len: int) -> list[BatchPhase]:
    """The phases of schedule ``spec`` (see the module docstring) for sequences of ``seq_len`` tokens.

    Raises:
        ValueError: a malformed entry, a first phase not at step 0, or starts that do not increase.
    """
    entries = [e for e in spec.split(",") if e.strip()]
    if not entries:
        raise ValueError(f"batch_schedule={spec!r} is empty; write it as 'B0,B1@STEP' e.g. '720,1080@57000'")
    phases: list[BatchPhase] = []
    tokens_seen = 0
    for i, entry in enumerate(entries):
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(
                f"batch_schedule entry {entry.strip()!r} is not BATCH, BATCH@STEP or BATCH@TOKENStok "
                "(e.g. '720,1080@57000' or '32,64@2e6tok')"
            )
        batch, start, in_tokens = int(match.group(1)), match.group(2), match.group(3)
        if batch < 1:
            raise ValueError(f"batch_schedule entry {entry.strip()!r}: the batch must be at least 1 sequence")
        if i == 0:
            if start is not None and float(start) != 0:
                raise ValueError(f"batch_schedule={spec!r}: the first phase starts at step 0; write it without '@'")
            phases.append(BatchPhase(0, batch))
            continue
        if start is None:
            raise ValueError(f"batch_schedule entry {entry.strip()!r} needs a start: BATCH@STEP or BATCH@TOKENStok")
        value = float(start.replace("_", ""))
        if in_tokens:
            # The first step that starts with at least `value` tokens seen, at the current batch.
            prev = phases[-1]
            step = prev.start_step + max(0, math.ceil((value - tokens_seen) / (prev.global_batch * seq_len)))
        else:
            if value != int(value):
                raise ValueError(f"batch_schedule entry {entry.strip()!r}: a step must be a whole number")
            step = int(value)
        if step <= phases[-1].start_step:
            raise ValueError(
                f"batch_schedule={spec!r}: phase {entry.strip()!r} starts at step {step}, not after "
                f"the previous phase's start {phases[-1].start_step}; starts must increase"
            )
        tokens_seen += (step - phases[-1].start_step) * phases[-1].global_batch * seq_len
        phases.append(BatchPhase(step, batch))
    return phases


def batch_at(phases: list[BatchPhase], step: int) -> int:
    """Global batch of 0-based optimizer step ``step``."""
    batch = phases[0].global_batch
    for phase in phases:
        if phase.start_step <= step:
            batch = phase.global_batch
    return batch


def sequences_before(phases: list[BatchPhase], step: int) -> int:
    """Sequences consumed by steps ``0 .. step - 1``."""
    total = 0
    for i, phase in enumerate(phases):
        end = phases[i + 1].start_step if i + 1 < len(phases) else None
        stop = step if end is None else min(step, end)
        if stop > phase.start_step:
            total += (stop - phase.start_step) * phase.global_batch
    return total


def steps_for_tokens(phases: list[BatchPhase], tokens: float, seq_len: int) -> int:
    """Fewest steps whose tokens reach ``tokens`` (the last phase runs as long as needed)."""
    steps, left = 0, float(tokens)
    for i, phase in enumerate(phases):
        per_step = phase.global_batch * seq_len
        end = phases[i + 1].start_step if i + 1 < len(phases) else None
        if end is None or left <= (end - phase.start_step) * per_step:
            return phase.start_step + max(0, math.ceil(left / per_step))
        left -= (end - phase.start_step) * per_step
        steps = end
    return steps


def describe(phases: list[BatchPhase], total_steps: int, seq_len: int) -> str:
    """One line per phase, as the dry-run prints it: batch, step range, step count, tokens."""
    parts = []
    for i, phase in enumerate(phases):
        end = min(phases[i + 1].start_step, total_steps) if i + 1 < len(phases) else total_steps
        if end <= phase.start_step:
            continue
        n = end - phase.start_step
        parts.append(
            f"{phase.global_batch} sequences for steps {phase.start_step:,}-{end - 1:,} ({n:,} steps, "
            f"{n * phase.global_batch * seq_len:,} tokens)"
        )
    return "; ".join(parts)


__all__ = ["BatchPhase", "parse", "batch_at", "sequences_before", "steps_for_tokens", "describe"]
