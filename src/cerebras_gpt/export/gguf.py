"""GGUF export for llama.cpp: the GPT-2 architecture, its tensor names, and the GPT-2 BPE tokenizer.

What llama.cpp's own converter (`convert_hf_to_gguf.py`, class `GPT2Model`) writes for a
`GPT2LMHeadModel`, reproduced through the `gguf` package so no llama.cpp checkout is needed:

- architecture ``gpt2`` with ``block_count``, ``context_length``, ``embedding_length``,
  ``feed_forward_length``, ``attention.head_count`` and ``attention.layer_norm_epsilon``;
- tensors named by `gguf.TensorNameMap` (``token_embd``, ``position_embd``, ``blk.N.attn_qkv``,
  ``blk.N.attn_output``, ``blk.N.ffn_up``, ``blk.N.ffn_down``, ``blk.N.attn_norm``, ``blk.N.ffn_norm``,
  ``output_norm``, and ``output`` only when the LM head is not tied: llama.cpp reuses ``token_embd``),
  with HF's `Conv1D` weights transposed to (out, in), which is our `nn.Linear` layout;
- the tokenizer as ``tokenizer.ggml.model = gpt2`` (pre-tokenizer ``gpt-2``): the byte-level BPE
  tokens in id order, their types (<|endoftext|> is a control token), the merges, and bos = eos =
  <|endoftext|> with no BOS added to prompts (GPT-2's convention).

Types follow llama.cpp's rules: 1-D tensors (norms, biases) and the position embeddings stay f32;
2-D weights take the requested type, and q8_0 falls back to f16 for a tensor whose rows are not a
multiple of the 32-value block. The μP multipliers are folded in first (`hf.folded_state_dict`), so a
μP model exports as the plain GPT-2 it equals.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from cerebras_gpt.export import temp_path_beside
from cerebras_gpt.extras import require_extra
from cerebras_gpt.hf import folded_state_dict
from cerebras_gpt.model import GPT

log = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "q8_0")
_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


def _require_gguf():
    require_extra("export", "gguf", feature="GGUF export")
    import gguf

    return gguf


def tokenizer_vocab(tokenizer) -> tuple[list[str], list[str], set[int]]:
    """(tokens in id order, merges as "a b", ids of special tokens) from our tokenizer's files."""
    if tokenizer.tokenizer_file is not None:
        data = json.loads(Path(tokenizer.tokenizer_file).read_text(encoding="utf-8"))
        vocab = dict(data["model"]["vocab"])
        specials = set()
        for added in data.get("added_tokens", []):
            vocab[added["content"]] = added["id"]
            if added.get("special"):
                specials.add(added["id"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    else:
        vocab = json.loads(Path(tokenizer.vocab_file).read_text(encoding="utf-8"))
        lines = Path(tokenizer.merges_file).read_text(encoding="utf-8").split("\n")
        merges = [line for line in lines if line and not line.startswith("#version")]
        specials = {i for t, i in vocab.items() if t.startswith("<|") and t.endswith("|>")}
    specials.add(tokenizer.eos_id)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("the tokenizer's vocabulary ids are not 0..n-1 without gaps; cannot write a GGUF token list")
    return [t for t, _ in by_id], merges, specials


def _tensor_type(gguf, name: str, array: np.ndarray, outtype: str):
    """The GGML type llama.cpp's converter would pick for this tensor."""
    q = gguf.GGMLQuantizationType
    if array.ndim <= 1 or name.endswith("_norm.weight") or name.startswith("position_embd") or outtype == "f32":
        return q.F32
    if outtype == "f16":
        return q.F16
    block = gguf.GGML_QUANT_SIZES[q.Q8_0][0]
    return q.Q8_0 if array.shape[-1] % block == 0 else q.F16


def write_gguf(model: GPT, tokenizer, path: str | os.PathLike, outtype: str = "f16", name: str | None = None) -> dict:
    """Write ``model`` and ``tokenizer`` as one GGUF file that llama.cpp's ``gpt2`` architecture loads.

    Args:
        model: a GPT (μP or not; folded on the way out).
        tokenizer: its tokenizer (`cerebras_gpt.load_tokenizer`), written into the file.
        path: the .gguf file to create; written to a temporary name, then renamed.
        outtype: ``f32``, ``f16`` or ``q8_0`` for the 2-D weights.
        name: ``general.name`` (default: the preset name or "cerebras-gpt").

    Returns:
        A summary: path, bytes, tensor count and the type of each tensor.
    """
    gguf = _require_gguf()
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r} is not one of {OUTTYPES}")
    config = model.config
    tokens, merges, specials = tokenizer_vocab(tokenizer)
    if len(tokens) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokens)} tokens but the model only {config.vocab_size} embeddings")
    types = [int(gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL) for i in range(len(tokens))]
    # Embedding rows without a token (a padded vocabulary): llama.cpp's converter names them [PADn], unused.
    for i in range(len(tokens), config.vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(int(gguf.TokenType.UNUSED))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[outtype]
    # A fresh temporary file beside ``path``, never a fixed name (OUT.gguf.tmp) that a user's file may hold.
    tmp = temp_path_beside(path, directory=False)
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
        writer.add_name(name or config.name or "cerebras-gpt")
        writer.add_block_count(config.n_layer)
        writer.add_context_length(config.block_size)
        writer.add_embedding_length(config.n_embd)
        writer.add_feed_forward_length(config.ffn_dim)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        writer.add_file_type(file_type)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokenizer.eos_id)
        writer.add_eos_token_id(tokenizer.eos_id)
        writer.add_unk_token_id(tokenizer.eos_id)
        writer.add_add_bos_token(False)

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
        state, tied = folded_state_dict(model)
        summary: dict[str, str] = {}
        for key, tensor in state.items():
            if key.endswith(_CONV1D):
                tensor = tensor.t()  # HF Conv1D (in, out) -> (out, in), as llama.cpp's converter does
            new_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ValueError(f"no GGUF name for tensor {key!r}")
            array = tensor.detach().float().cpu().contiguous().numpy()
            qtype = _tensor_type(gguf, new_name, array, outtype)
            if qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(new_name, array)
            elif qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(new_name, array.astype(np.float16))
            else:
                writer.add_tensor(new_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
            summary[new_name] = qtype.name
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    size = path.stat().st_size
    log.info(
        "wrote %s: %d tensors (%s), %.1f MB%s",
        path,
        len(summary),
        outtype,
        size / 1e6,
        "" if tied else "; untied LM head as output.weight",
    )
    return {"path": str(path), "bytes": size, "tensors": summary}
