"""Hugging Face GPT-2 format: load and save model directories, the μP fold, hub download.

A model directory is what `transformers.GPT2LMHeadModel.save_pretrained` writes: `config.json`,
`model.safetensors` (or `pytorch_model.bin`, optionally sharded with an index), tokenizer files and
`generation_config.json`. We read every layout the Cerebras-GPT repos on the hub use: full
`GPT2LMHeadModel` keys and headless `GPT2Model` keys (the 13B repo), configs without
`architectures`, and the BTLM-format configs of Cerebras' μP checkpoints (`model_type: btlm`).

HF GPT-2 stores its linear weights as `Conv1D` (in, out); we use `nn.Linear` (out, in), so the four
matrices of each block are transposed both ways. A μP model is written with its forward multipliers
folded into the weights, which is exact in real arithmetic:
- embedding multiplier m_e: wte and wpe are scaled by m_e (the block sees m_e·(wte[x] + wpe[p]));
- attention 1/d_head instead of 1/√d_head: the query rows of c_attn (weight and bias) get 1/√d_head;
- output multiplier s: the LM head becomes s·wte (the unscaled one), untied unless s == m_e.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from cerebras_gpt import mup
from cerebras_gpt.config import PRESETS, GPTConfig
from cerebras_gpt.limits import check_model_fits
from cerebras_gpt.model import GPT

log = logging.getLogger(__name__)

# HF Conv1D weights (stored (in, out)) that we hold as nn.Linear (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter buffers old GPT-2 checkpoints carry.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


# ----------------------------------------------------------------------------- locate files
def resolve_model_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id (or preset name) downloaded through huggingface_hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise ValueError(
            f"model {str(path)!r} is a file; pass the model directory that holds it ({str(path.parent)!r}) instead"
        )
    repo_id = str(path_or_hub_id)
    if repo_id.lower() in {p.lower() for p in PRESETS} and "/" not in repo_id:
        repo_id = "cerebras/" + next(p for p in PRESETS if p.lower() == repo_id.lower())
    if not _HUB_ID.fullmatch(repo_id) or path.parent.is_dir() and str(path.parent) not in ("", "."):
        # A mistyped path (not owner/name, or owner/name whose "owner" is a local directory): say so
        # rather than asking the hub for it.
        raise ValueError(
            f"model {str(path_or_hub_id)!r}: no such local directory{_near_paths(path)}, and not a "
            "hub id like 'cerebras/Cerebras-GPT-111M'; check the path"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise RuntimeError("downloading from the hub needs huggingface_hub: pip install 'cerebras-gpt[hf]'") from e
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.bin"],
        )
    except Exception as e:  # network errors come in many types (OSError, requests, httpx, hub errors)
        from cerebras_gpt.errors import is_network_error, one_line

        if type(e).__name__ in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
            raise ValueError(
                f"model {repo_id!r}: no such local directory, and the Hugging Face hub has no "
                f"repository (or revision) by that name you can read; check the path or the "
                f"name"
            ) from e
        why = "no network or offline mode" if is_network_error(e) else f"{type(e).__name__}: {one_line(e)}"
        raise ValueError(
            f"model {repo_id!r}: no such local directory, and it could not be downloaded from the Hugging "
            f"Face hub ({why}). Check the path; with no network, download the repository elsewhere and "
            "pass its local directory."
        ) from e
    return Path(local)


# owner/name on the hub: letters, digits, '-', '_', '.'; at most 96 characters each side.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def _near_paths(path: Path) -> str:
    """ " (did you mean ...?)" naming siblings of ``path`` with similar names, or ""."""
    import difflib

    parent = path.parent if str(path.parent) else Path(".")
    try:
        siblings = [p.name for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, siblings, n=1)
    return f" (did you mean {str(parent / close[0])!r}?)" if close else ""


# ----------------------------------------------------------------------------- config
def config_from_hf(hf: dict[str, Any]) -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 (or Cerebras BTLM-format μP) config.json dict."""
    if not isinstance(hf, dict):
        raise ValueError(f"config.json must hold a JSON object, not {type(hf).__name__}")
    missing = [key for key in ("n_layer", "n_embd", "n_head") if key not in hf]
    if missing:
        raise ValueError(
            f"config.json lacks {', '.join(missing)}: it is not a complete GPT-2 config; "
            "re-save the model (save_pretrained) or add the missing fields"
        )
    model_type = hf.get("model_type", "gpt2")
    if model_type not in ("gpt2", "btlm"):
        raise ValueError(f"config.json has model_type={model_type!r}; only GPT-2 (and Cerebras' BTLM μP) models load")
    activation = hf.get("activation_function", "gelu")
    problems = []
    if activation != "gelu":
        problems.append(f"activation_function={activation!r} (Cerebras-GPT uses the exact 'gelu')")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        problems.append("scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported")
    if not hf.get("scale_attn_weights", True):
        problems.append("scale_attn_weights=false is not supported")
    if hf.get("position_embedding_type", "learned") != "learned":
        problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (only learned positions)")
    if problems:
        raise ValueError("unsupported config.json: " + "; ".join(problems))
    n_embd = hf["n_embd"]
    fields: dict[str, Any] = dict(
        n_layer=hf["n_layer"],
        n_embd=n_embd,
        n_head=hf["n_head"],
        n_inner=hf.get("n_inner") or 4 * n_embd,
        block_size=hf.get("n_positions", 1024),
        vocab_size=hf.get("vocab_size", 50257),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        init_std=hf.get("initializer_range", 0.02),
    )
    ours = hf.get("cerebras_gpt", {})
    fields["name"] = ours.get("name", "")
    if model_type == "btlm":
        # Cerebras' μP checkpoints: multipliers in the config, weights unfolded.
        width_scale = hf.get("mup_width_scale") or 256 / n_embd  # the first 111M-μP config lacks it
        if hf.get("mup_scale_qk_dot_by_d") is False:
            raise ValueError("BTLM config with mup_scale_qk_dot_by_d=false is not supported")
        fields.update(
            use_mup=True,
            mup_embeddings_scale=float(hf.get("mup_embeddings_scale", 10.0)),
            mup_output_alpha=float(hf.get("mup_output_alpha", 1.0)),
            mup_base_width=int(round(n_embd * width_scale)),
        )
    return GPTConfig(**fields)


def read_config(config_path: Path) -> GPTConfig:
    """`config_from_hf` of a config.json file; every problem names the file."""
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{str(config_path)!r} is not valid JSON ({e}); the file is corrupt or truncated: "
            "re-save or re-download the model"
        ) from e
    try:
        return config_from_hf(hf)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(config_path)!r}: {e}") from e


def config_to_hf(config: GPTConfig, tie_word_embeddings: bool, dtype: torch.dtype) -> dict[str, Any]:
    """A plain GPT-2 config.json (after the μP fold the model is plain GPT-2)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_dim,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "vocab_size": config.vocab_size,
        "activation_function": "gelu",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": tie_word_embeddings,
        "initializer_range": config.init_std,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "dtype": str(dtype).removeprefix("torch."),
        # Our own record: the preset and whether μP multipliers were folded into these weights.
        "cerebras_gpt": {"name": config.name, "mup_folded": config.use_mup, "architecture": config.to_dict()},
    }


# ----------------------------------------------------------------------------- weights
def _read_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        path = model_dir / name
        if not path.exists():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(
                    f'{str(path)!r} is not a valid weight index (needs a "weight_map" object); '
                    "re-save or re-download the model"
                ) from e
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(model_dir / shard))
            return state
        return _read_weight_file(path)
    raise FileNotFoundError(f"no weights in {str(model_dir)!r}: expected one of {', '.join(_WEIGHT_FILES)}")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file; never unpickles code (safetensors, or torch.load weights_only)."""
    import pickle

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # bad bytes, not a refusal
            raise ValueError(
                f"{str(path)!r} is corrupt or truncated ({_short(e)}); download or export the model again"
            ) from e
        # weights_only refused something other than tensors
        raise ValueError(
            f"{str(path)!r} holds more than tensors ({_short(e)}); it is not loaded, as that could "
            "run code. Convert it to safetensors where it came from, or use another copy"
        ) from e
    except Exception as e:  # safetensors' SafetensorError, torch's RuntimeError/EOFError on bad bytes
        raise ValueError(
            f"{str(path)!r} is corrupt or truncated ({type(e).__name__}: {_short(e)}); "
            "download or export the model again"
        ) from e


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def state_dict_from_hf(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Map HF GPT-2 keys (with or without `transformer.`) to ours, transposing Conv1D weights.

    Consumes ``hf_state`` as it goes, so a transposed copy never coexists with all the originals.
    """
    out: dict[str, torch.Tensor] = {}
    for key in list(hf_state):
        tensor = hf_state.pop(key)
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key == "lm_head.weight":
            if not config.tie_word_embeddings:
                out[key] = tensor
            continue
        name = key if key.startswith("transformer.") else "transformer." + key
        if name.endswith(_CONV1D) and tensor.dim() == 2:
            # A contiguous (out, in) copy, not a transposed view: F.linear and the decode kernels
            # run measurably slower on the view's strides (BENCHMARKS.md, "Figures from the code").
            tensor = tensor.t().contiguous()
        out[name] = tensor
    return out


def load_pretrained(
    path_or_hub_id: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.float32,
    revision: str | None = None,
) -> GPT:
    """A GPT from a model directory or hub id; strict: missing/unexpected tensors are listed."""
    model_dir = resolve_model_dir(path_or_hub_id, revision)
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{str(model_dir)!r} has no config.json; is it a model directory?")
    from cerebras_gpt.quantization import load_quantized, saved_precision

    if saved_precision(model_dir):  # a directory saved quantized loads as such, without re-quantizing
        return load_quantized(model_dir, device=device)
    config = read_config(config_path)
    check_model_fits(config, dtype or torch.float32, torch.device(device))
    state = state_dict_from_hf(_read_state_dict(model_dir), config)
    return model_from_state_dict(config, state, f"weights in {str(model_dir)!r}", device=device, dtype=dtype)


def model_from_state_dict(
    config: GPTConfig,
    state: dict[str, torch.Tensor],
    what: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPT:
    """A GPT (eval mode) holding ``state``'s tensors themselves: no random init, no second copy.

    The one build-and-check behind every loader (HF directories here, sparse directories in
    `cerebras_gpt.export.sparse`): the model is built on the meta device, the keys must match the config
    exactly (``lm_head.weight`` absent when tied) and every shape must agree, else one ValueError lists the
    missing and unexpected keys (or the first wrong shape), starting with ``what`` (e.g. "weights in 'dir'").

    Args:
        config: the architecture.
        state: our parameter names (`state_dict_from_hf` maps HF's) to tensors.
        what: names the source in errors.
        device: where the model goes.
        dtype: cast the tensors to this (None: keep theirs).
    """
    with torch.device("meta"):
        model = GPT(config, init_weights=False)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    expected = set(shapes)
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{what} do not match the config: missing {missing or 'none'}; unexpected {unexpected or 'none'}"
        )
    for key, tensor in state.items():
        if tensor.shape != shapes[key]:
            raise ValueError(f"tensor {key!r} has shape {tuple(tensor.shape)}, config says {tuple(shapes[key])}")
    model.load_state_dict({k: v.to(dtype) if dtype else v for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    return model.to(device).eval()


def folded_state_dict(model: GPT) -> tuple[dict[str, torch.Tensor], bool]:
    """Plain GPT-2 weights in HF layout with μP multipliers folded in; returns (state, tied)."""
    config = model.config
    m_e, s_out = config.embeddings_scale, config.output_logits_scale
    state = {k: v.detach() for k, v in model.state_dict().items()}
    wte = state["transformer.wte.weight"]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        if key in ("transformer.wte.weight", "transformer.wpe.weight") and m_e != 1.0:
            tensor = tensor * m_e
        if key.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
            tensor = mup.fold_query_rows(tensor, config)
        if key.endswith(_CONV1D):
            tensor = tensor.t()
        out[key] = tensor.contiguous()
    head = wte if config.tie_word_embeddings else state["lm_head.weight"]
    tied = config.tie_word_embeddings and s_out == m_e
    if not tied:
        out["lm_head.weight"] = (head * s_out).contiguous() if s_out != 1.0 else head.contiguous()
    return out, tied


def save_pretrained(model: GPT, directory: str | Path, tokenizer=None, safe_serialization: bool = True) -> Path:
    """Write a Hugging Face GPT-2 model directory (a quantized model: see quantization.py); returns its path."""
    from cerebras_gpt import atomic
    from cerebras_gpt.quantization import precision_of, save_quantized

    if precision_of(model) != "fp32":
        return save_quantized(model, directory, tokenizer=tokenizer)
    from cerebras_gpt.tokenizer import load_tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, tied = folded_state_dict(model)
    dtype = next(iter(state.values())).dtype
    if safe_serialization:
        from safetensors.torch import save_file

        atomic.write_via_path(
            directory / "model.safetensors",
            lambda tmp: save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata={"format": "pt"}),
        )
    else:
        atomic.write_with(
            directory / "pytorch_model.bin", lambda f: torch.save({k: v.cpu() for k, v in state.items()}, f)
        )
    hf_config = config_to_hf(model.config, tie_word_embeddings=tied, dtype=dtype)
    atomic.write_json(directory / "config.json", hf_config)  # each file replaced whole (cerebras_gpt.atomic)
    generation = {"bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}
    atomic.write_json(directory / "generation_config.json", generation)
    (tokenizer or load_tokenizer()).save_pretrained(directory)
    _tokenizer_config_for_model(directory, model.config)
    return directory


def _tokenizer_config_for_model(directory: Path, config: GPTConfig) -> None:
    """Make tokenizer_config.json true to this model for transformers and vLLM: ``model_max_length`` is
    its context (their truncation and pipelines read it), ``chat_template`` is our server's chat format."""
    from cerebras_gpt.chat import CHAT_TEMPLATE

    path = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text()) if path.exists() else {}
    tokenizer_config.update(model_max_length=config.block_size, chat_template=CHAT_TEMPLATE)
    path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def load_model_and_tokenizer(
    path_or_hub_id: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32
):
    """(model, tokenizer) from a model directory, a training checkpoint's model directory, or a hub id.

    A training checkpoint (see train/checkpoint.py) keeps its model directory in ``model/``.
    """
    from cerebras_gpt.tokenizer import load_tokenizer

    path = Path(path_or_hub_id).expanduser()
    if path.is_dir() and not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        path = path / "model"
    model_dir = resolve_model_dir(path if path.is_dir() else path_or_hub_id)
    model = load_pretrained(model_dir, device=device, dtype=dtype)
    has_tokenizer = any((model_dir / f).exists() for f in ("vocab.json", "tokenizer.json"))
    return model, load_tokenizer(model_dir if has_tokenizer else None)
