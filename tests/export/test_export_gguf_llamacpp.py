"""Our GGUF export run by llama.cpp itself (llama-cpp-python): greedy tokens equal to ours.

llama-cpp-python builds llama.cpp from source (about ten minutes on two cores), so it is not a
dependency: this file skips, saying so, where it is not installed. `bench/llamacpp.py` measures the
same exports' speed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.export import export_model
from cerebras_gpt.generation import generate_ids

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (a source build: "
    "CMAKE_BUILD_PARALLEL_LEVEL=2 pip install llama-cpp-python==0.3.36)",
)

PROMPTS = ["First Citizen:\nBefore we proceed", "ROMEO:\nI will", "The king"]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, shared_data):
    """A small model trained for a few seconds on tinyshakespeare: confident, untied-by-chance logits.

    Random weights give near-ties, where f16 or 8-bit rounding may legitimately pick another token.
    """
    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    ids = torch.tensor(tokenizer.encode((shared_data / "tinyshakespeare.txt").read_text()[:60_000]))
    model = GPT(GPTConfig(n_layer=2, n_embd=64, n_head=2, block_size=128, name="gguf-interop")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=generator)
        batch = torch.stack([ids[s : s + 65] for s in starts])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 7.5, f"the fixture model did not train (loss {loss.item():.2f})"
    d = tmp_path_factory.mktemp("trained")
    model.eval().save_pretrained(d)
    return d


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_llama_cpp_decodes_our_gguf_like_we_do(trained_dir, tmp_path, outtype):
    path = tmp_path / f"model-{outtype}.gguf"
    export_model(trained_dir, "gguf", path, outtype=outtype)
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, logits_all=outtype == "f32", verbose=False)
    model, tokenizer = GPT.from_pretrained(trained_dir).eval(), load_tokenizer()
    for text in PROMPTS:
        prompt = tokenizer.encode(text)
        ours = generate_ids(model, [prompt], max_new_tokens=NEW_TOKENS, temperature=0, stop_at_eos=False)[0]
        theirs = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            theirs.append(token)
            if len(theirs) == NEW_TOKENS:
                break
        assert theirs == ours, f"{outtype}: llama.cpp decoded {theirs}, we decoded {ours} after {text!r}"
    if outtype == "f32":  # the logits themselves, at every prompt position
        prompt = tokenizer.encode(PROMPTS[0])
        llm.reset()
        llm.eval(prompt)
        theirs = np.asarray(llm.scores[: len(prompt)])
        with torch.inference_mode():
            ours = model(torch.tensor([prompt]))[0].numpy()
        assert np.abs(theirs - ours).max() < 5e-3  # float32 sums in another order; logits here are ~5-10
