"""Exported model directories as transformers (hence vLLM) reads them: ``model_max_length`` is the
model's context, ``chat_template`` renders exactly what our server feeds the model, generation_config
names the EOS token, and a pipeline given a prompt longer than the context truncates it instead of
indexing past the position table."""

from __future__ import annotations

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, load_tokenizer

transformers = pytest.importorskip("transformers")

CONTEXT = 128  # not the 2048 of the published models: the exported files must say this model's own
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant. "},
    {"role": "user", "content": "  What is 2 + 2?\n"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3? Answer with {{ braces }} and 'quotes'."},
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("hf")
    GPT(GPTConfig.from_name("debug-tiny", block_size=CONTEXT)).eval().save_pretrained(directory)
    return directory


def test_model_max_length_is_the_context(exported):
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    assert tok.model_max_length == CONTEXT
    assert len(tok("word " * 1000, truncation=True)["input_ids"]) == CONTEXT


def test_chat_template_equals_what_the_server_feeds_the_model(exported):
    from cerebras_gpt.serve.app import _render_chat
    from cerebras_gpt.serve.schemas import ChatCompletionRequest

    server_prompt = _render_chat(ChatCompletionRequest(model="m", messages=MESSAGES))
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == server_prompt
    assert server_prompt.endswith("User: And 3 + 3? Answer with {{ braces }} and 'quotes'.\nAssistant:")
    ids = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(ids) == load_tokenizer(exported).encode(server_prompt)
    # Without the generation prompt: the conversation as finetune renders it for training.
    from cerebras_gpt import chat

    whole = "".join(text for text, _ in chat.render_segments(MESSAGES))
    assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=False) == whole


def test_chat_template_rejects_an_unknown_role_with_its_name(exported):
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    with pytest.raises(Exception, match="tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_generation_config_reads_back(exported):
    generation = transformers.GenerationConfig.from_pretrained(exported)
    assert generation.eos_token_id == 50256 and generation.bos_token_id == 50256


def test_pipeline_on_a_prompt_longer_than_the_context(exported):
    pipe = transformers.pipeline("text-generation", model=str(exported), device="cpu")
    long_prompt = "the quick brown fox " * 200  # ~800 tokens, over 6x the context
    out = pipe(long_prompt, max_new_tokens=4, do_sample=False, handle_long_generation="hole")
    assert out[0]["generated_text"]
