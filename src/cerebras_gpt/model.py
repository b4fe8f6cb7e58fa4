"""The Cerebras-GPT network: GPT-2 blocks with GPT-3 shapes, plus a KV cache for decoding.

Pre-LN blocks, exact (erf) GELU, learned absolute positions, tied input/output embeddings, no
LM-head bias, biases everywhere else, LayerNorm eps 1e-5, SDPA attention. Parameter names are
Hugging Face GPT-2's (`transformer.h.N.attn.c_attn`, ...) so checkpoints map one to one, up to the
transpose of HF's `Conv1D` (we use `nn.Linear`). μP's forward multipliers come from the config
(`embeddings_scale`, `attn_scale`, `output_logits_scale`); under SP they are 1, 1/√d_head and 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from cerebras_gpt import mup
from cerebras_gpt.config import GPTConfig
from cerebras_gpt.limits import check_model_fits

if TYPE_CHECKING:
    import os


class KVCache(nn.Module):
    """Preallocated keys and values of one layer, addressed by absolute position.

    Slot ``p`` of a row holds the key/value of the token at position ``p`` of that row, so rows
    of a batch may sit at different positions (ragged prompts, continuous batching): a query at
    position ``p`` attends to slots ``0..p`` of its own row and never sees stale slots beyond.

    The cache may be kept at a lower precision than the keys and values it is given (the compiled
    decode step of a quantized model keeps bfloat16): they are rounded to it when written and read
    back at the precision they came in.
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        n_head: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, n_head, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hd) at positions (T,) or (B, T); return keys/values to attend to.

        Returns slots ``0..span-1`` of the batch's rows (every slot when ``span`` is None). ``rows`` (B,)
        selects which cache rows the batch occupies (a server prefilling one request while others decode);
        default rows 0..B-1.
        """
        span = span or self.k.shape[2]
        dtype = k.dtype
        if dtype == self.k.dtype:
            return self._write(input_pos, k, v, span, rows)
        keys, values = self._write(input_pos, k.to(self.k.dtype), v.to(self.v.dtype), span, rows)
        return keys.to(dtype), values.to(dtype)

    def _write(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int, rows: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`update` with k, v at the cache's dtype."""
        B, nh, T, hd = k.shape
        if rows is None and input_pos.dim() == 1 and B == self.k.shape[0]:
            self.k.index_copy_(2, input_pos, k)
            self.v.index_copy_(2, input_pos, v)
            return self.k[:, :, :span], self.v[:, :, :span]
        # One flat index_copy_: slot (row, head, pos) of the cache is row (row*nh + head)*S + pos of
        # its (rows*nh*S, hd) view. Much cheaper than advanced-index assignment for ragged writes.
        S = self.k.shape[2]
        row_ids = torch.arange(B, device=k.device) if rows is None else rows
        pos = input_pos.expand(B, T) if input_pos.dim() == 1 else input_pos  # (B, T)
        heads = torch.arange(nh, device=k.device)
        flat = ((row_ids.view(B, 1, 1) * nh + heads.view(1, nh, 1)) * S + pos.view(B, 1, T)).reshape(-1)
        self.k.view(-1, hd).index_copy_(0, flat, k.reshape(-1, hd))
        self.v.view(-1, hd).index_copy_(0, flat, v.reshape(-1, hd))
        keys, values = self.k[:, :, :span], self.v[:, :, :span]
        if rows is None:
            return keys[:B], values[:B]
        return keys[rows], values[rows]

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.scale = config.attn_scale
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # packed q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        cache_rows: torch.Tensor | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        # Packed [q | k | v] along the last dim -> three (B, nh, T, hd) views, in three ops instead of seven.
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if kv_cache is None:
            # mask: None (plain causal) or the block-diagonal causal mask of packed segments (B, 1, T, T).
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=mask is None,
                scale=self.scale,
                dropout_p=self.dropout if self.training else 0.0,
            )
        elif span is not None:
            # Only the slots some query can see: 0..max position (span).
            k, v = kv_cache.update(input_pos, k, v, span=span, rows=cache_rows)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            # Every slot, masked (GPT.forward's whole_cache, for a compiled decode step). Written out:
            # Inductor fuses it into one loop, where its lowering of SDPA with a mask costs several
            # times more at one query a row (BENCHMARKS.md, "Compiled decode step").
            k, v = kv_cache.update(input_pos, k, v, span=None, rows=cache_rows)
            scores = (q @ k.transpose(-2, -1)) * self.scale
            y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        y = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        # Dropout is the identity outside training: not calling it saves a module call per block and step.
        return self.resid_dropout(y) if self.training else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim)
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Exact erf GELU: the HF configs say "gelu", not GPT-2's tanh "gelu_new".
        y = self.c_proj(F.gelu(self.c_fc(x)))
        return self.dropout(y) if self.training else y


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache_rows: torch.Tensor | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), input_pos, self.kv_cache, mask, cache_rows, span)
        return x + self.mlp(self.ln_2(x))


def segment_positions_and_mask(segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, T) restarting at 0 in each run of equal ``segment_ids`` (B, T), and the boolean
    attention mask (B, 1, T, T) letting a token see the earlier tokens of its own run only."""
    t = torch.arange(segment_ids.shape[1], device=segment_ids.device)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    run = starts.cumsum(1)  # runs, not raw ids: a repeated id later in the row is another document
    positions = t - torch.where(starts, t, 0).cummax(1).values  # (B, T)
    mask = (run.unsqueeze(2) == run.unsqueeze(1)) & (t.unsqueeze(1) >= t)  # (B, T, T): same run, causal
    return positions, mask.unsqueeze(1)


class GPT(nn.Module):
    """Cerebras-GPT decoder. ``model(input_ids)`` returns logits of shape (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig, init_weights: bool = True) -> None:
        super().__init__()
        # Refuse a config too big for this machine before the first layer is allocated.
        check_model_fits(config, torch.get_default_dtype(), torch.get_default_device())
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.embeddings_scale = config.embeddings_scale
        self.output_logits_scale = config.output_logits_scale
        if init_weights:
            self.init_weights()

    # ----- initialization ---------------------------------------------------------------
    def init_std(self, name: str) -> float | None:
        """Init std of a parameter by name (None: LayerNorm/bias, set to ones/zeros)."""
        if self.config.use_mup:
            return mup.init_std(self.config, name)
        if name.endswith(mup.RESIDUAL_PROJ_SUFFIXES):
            return self.config.residual_init_std  # 0.02/sqrt(2L), or the preset's fixed 0.0025
        if name.endswith(".weight") and not (".ln_" in name or "ln_f" in name):
            return self.config.init_std
        return None

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated normal (±2σ) as in the ModelZoo; biases zero, LayerNorms one/zero."""
        for name, p in self.named_parameters():
            std = self.init_std(name)
            if std is not None:
                nn.init.trunc_normal_(p, mean=0.0, std=std, a=-2 * std, b=2 * std)
            elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    # ----- forward ----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        logits_index: int | torch.Tensor | None = None,
        cache_rows: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        whole_cache: bool = False,
    ) -> torch.Tensor:
        """Logits for ``input_ids`` (B, T).

        Args:
            input_ids: token ids (B, T).
            input_pos: positions of the tokens, (T,) or (B, T); needed with a KV cache
                (`setup_kv_cache`), default ``arange(T)`` without one.
            logits_index: return logits of one position per row only, (B, 1, V): an int (``-1`` for
                the last) or a (B,) tensor of indices along T (ragged prompts). Decoding needs only
                these, and the LM head is the largest matmul of a small model.
            cache_rows: which rows of the KV cache this batch uses, (B,); default rows 0..B-1.
                Lets a serving engine prefill or decode any subset of its sequence slots.
            segment_ids: documents packed into one row, (B, T): each run of equal ids is a document that
                attends only within itself (block-diagonal causal mask) and has positions from 0, so it
                gets the logits it would get alone. Without a KV cache or input_pos only.
            whole_cache: with a KV cache, attend over all of its slots, masked past each position,
                instead of cutting them at the furthest position: no shape then depends on the
                positions' values (no host sync either), so a compiled decode step keeps one graph.
        """
        B, T = input_ids.shape
        caching = self.transformer.h[0].kv_cache is not None
        if segment_ids is not None and (caching or input_pos is not None):
            raise ValueError(
                "segment_ids sets the positions itself and needs no KV cache: "
                "pass neither input_pos nor a set-up KV cache with it"
            )
        if segment_ids is not None and segment_ids.shape != input_ids.shape:
            raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)}; it needs input_ids' {(B, T)}")
        if input_pos is None:
            if caching:
                raise ValueError("a KV cache is set up: pass input_pos (positions of the tokens)")
            if T > self.config.block_size:
                raise ValueError(
                    f"sequence of {T} tokens is longer than the context ({self.config.block_size}); "
                    "truncate the input or use a sliding window"
                )
            input_pos = torch.arange(T, device=input_ids.device)
        mask, span = None, None
        if caching:
            # Position p sees cache slots 0..p of its own row. Slots past the furthest position are cut
            # (span), or with whole_cache all are kept and masked (span None: nothing depends on values).
            slots_kept = self.transformer.h[0].kv_cache.k.shape[2]
            if not whole_cache:
                span = int(input_pos.max()) + 1
                if span > slots_kept:
                    raise ValueError(f"position {span - 1} is past the KV cache length; set up a longer cache")
                slots_kept = span
            if not whole_cache and input_pos.dim() == 1 and T == 1:
                mask = None  # one shared position p: slots 0..p are all visible, no mask needed
            else:
                slots = torch.arange(slots_kept, device=input_ids.device)
                mask = slots <= input_pos.unsqueeze(-1)  # (T, S) or (B, T, S)
                mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask  # (B, 1, T, S)
        if segment_ids is not None:
            input_pos, mask = segment_positions_and_mask(segment_ids)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(input_pos)
        if self.embeddings_scale != 1.0:
            x = x * self.embeddings_scale
        if self.training:
            x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, input_pos, mask, cache_rows, span)
        if isinstance(logits_index, int):
            x = x[:, logits_index].unsqueeze(1)
        elif logits_index is not None:
            x = x[torch.arange(B, device=x.device), logits_index].unsqueeze(1)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.output_logits_scale != 1.0:
            logits = logits * self.output_logits_scale
        return logits

    # ----- KV cache ---------------------------------------------------------------------
    def setup_kv_cache(
        self,
        batch_size: int,
        max_seq_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[KVCache]:
        """Allocate a cache of ``batch_size`` rows x ``max_seq_len`` positions in every block; returns them."""
        max_seq_len = max_seq_len or self.config.block_size
        if max_seq_len > self.config.block_size:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the context ({self.config.block_size})")
        param = self.transformer.wte.weight
        caches = [
            KVCache(
                batch_size,
                max_seq_len,
                self.config.n_head,
                self.config.head_dim,
                device=device or param.device,
                dtype=dtype or param.dtype,
            )
            for _ in self.transformer.h
        ]
        self.attach_kv_cache(caches)
        return caches

    def attach_kv_cache(self, caches: list[KVCache]) -> None:
        """Decode into caches set up before (`setup_kv_cache`'s result), one per block, as they are.

        A compiled decode step is specialized to the cache tensors it was traced with; reattaching
        them (instead of allocating new ones) lets the next generation reuse it."""
        if len(caches) != len(self.transformer.h):
            raise ValueError(f"{len(caches)} KV caches for {len(self.transformer.h)} blocks")
        for block, cache in zip(self.transformer.h, caches):
            block.kv_cache = cache

    def clear_kv_cache(self) -> None:
        for block in self.transformer.h:
            block.kv_cache = None

    # Cache-row operations. Callers (the generation loop, the server's engine, the lm-eval adapter)
    # move and free rows through these rather than writing the cache tensors, so the cache layout
    # (rows x heads x positions x head_dim, addressed by absolute position) stays this module's business.
    def _caches(self) -> list[KVCache]:
        caches = [block.kv_cache for block in self.transformer.h]
        if caches[0] is None:
            raise ValueError("no KV cache is set up; call setup_kv_cache(batch_size) first")
        return caches

    @property
    def kv_cache_shape(self) -> tuple[int, int]:
        """(rows, positions) of the set-up KV cache."""
        k = self._caches()[0].k
        return k.shape[0], k.shape[2]

    def copy_cache_rows(
        self, dst: torch.Tensor | list[int], src: torch.Tensor | list[int], length: int | None = None
    ) -> None:
        """Copy cache rows ``src`` into rows ``dst`` (equal-length index lists), every layer.

        Only positions ``0..length-1`` are copied (default: all). The source rows are read before any
        destination is written, so the two lists may overlap (a permutation, a fan-out of one row).
        """
        device = self.transformer.wte.weight.device
        dst = torch.as_tensor(dst, device=device)
        src = torch.as_tensor(src, device=device)
        if dst.shape != src.shape:
            raise ValueError(f"copy_cache_rows: dst has {dst.numel()} rows but src has {src.numel()}")
        for cache in self._caches():
            n = cache.k.shape[2] if length is None else length
            cache.k[dst, :, :n] = cache.k[src, :, :n]
            cache.v[dst, :, :n] = cache.v[src, :, :n]

    def reset_cache_rows(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Zero cache rows ``rows`` (default: all), every layer: the row is then as freshly allocated."""
        for cache in self._caches():
            if rows is None:
                cache.reset()
            else:
                cache.k[rows] = 0
                cache.v[rows] = 0

    def truncate_cache_rows(self, rows: torch.Tensor | list[int], length: int) -> None:
        """Forget positions ``length..`` of cache rows ``rows`` (zeroed), so they can be rewritten."""
        for cache in self._caches():
            cache.k[rows, :, length:] = 0
            cache.v[rows, :, length:] = 0

    # ----- I/O (Hugging Face GPT-2 format; see hf.py) ----------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, **kwargs) -> GPT:
        """Load a model directory or Hugging Face hub id (e.g. ``cerebras/Cerebras-GPT-111M``)."""
        from cerebras_gpt import hf  # I/O lives in hf.py; imported lazily to keep the model lean

        return hf.load_pretrained(path_or_hub_id, **kwargs)

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write a Hugging Face GPT-2 directory (μP multipliers folded in) that transformers loads."""
        from cerebras_gpt import hf

        return hf.save_pretrained(self, directory, **kwargs)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["GPT", "Block", "CausalSelfAttention", "MLP", "KVCache"]
