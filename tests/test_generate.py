"""Generation: greedy parity with transformers, cache = no cache, sampling controls, text streaming."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from cerebras_gpt import (
    GPT,
    GPTConfig,
    SamplingParams,
    decode_linear,
    generate,
    generate_ids,
    load_tokenizer,
    stream_text,
)
from cerebras_gpt.decode_linear import (
    DecodeLinear,
    decode_linears,
    packing_available,
    release_packed_weights,
    split_row_linear,
    split_row_pays,
)
from cerebras_gpt.generation import TextStreamer, sample_next


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Our debug-small model with random weights and transformers' GPT2LMHeadModel on the same files."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("gen_model")
    GPT(GPTConfig.from_name("debug-small")).save_pretrained(directory)
    return GPT.from_pretrained(directory), GPT2LMHeadModel.from_pretrained(directory).eval()


def test_greedy_tokens_equal_transformers_generate_for_64_tokens(pair, two_threads):
    ours, theirs = pair
    prompt = load_tokenizer().encode("The quick brown fox jumps over the lazy dog")
    mine = generate_ids(ours, [prompt], max_new_tokens=64, temperature=0, stop_at_eos=False)[0]
    with torch.no_grad():
        ref = theirs.generate(
            torch.tensor([prompt]), max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=50256
        )
    assert len(mine) == 64 and mine == ref[0, len(prompt) :].tolist()


def test_ragged_batch_equals_transformers_left_padded_batch(pair):
    ours, theirs = pair
    tok = load_tokenizer()
    prompts = [tok.encode("Once upon a time"), tok.encode("In the beginning, there was only a single word"), [11]]
    mine = generate_ids(ours, prompts, max_new_tokens=16, temperature=0, stop_at_eos=False)
    width = max(map(len, prompts))
    ids = torch.tensor([[50256] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = theirs.generate(
            ids, attention_mask=mask, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=50256
        )
    assert mine == ref[:, width:].tolist()


def test_cached_and_uncached_greedy_decoding_agree(pair):
    ours, _ = pair
    prompt = load_tokenizer().encode("Cached and uncached")
    cached = generate_ids(ours, [prompt], max_new_tokens=24, temperature=0, stop_at_eos=False)[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(24):
            ids.append(int(ours(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt) :]


def test_repetition_penalty_matches_transformers(pair):
    ours, theirs = pair
    prompt = load_tokenizer().encode("la la la la la")
    mine = generate_ids(ours, [prompt], max_new_tokens=20, temperature=0, repetition_penalty=1.3, stop_at_eos=False)[0]
    with torch.no_grad():
        ref = theirs.generate(
            torch.tensor([prompt]),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            repetition_penalty=1.3,
            pad_token_id=50256,
        )
    assert mine == ref[0, len(prompt) :].tolist()


def test_seeded_sampling_is_reproducible_and_topk1_is_greedy(pair):
    ours, _ = pair
    prompt = [[464, 2068, 7586]]
    a = generate_ids(ours, prompt, max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7, stop_at_eos=False)
    b = generate_ids(ours, prompt, max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7, stop_at_eos=False)
    assert a == b
    assert generate_ids(ours, prompt, max_new_tokens=12, top_k=1, seed=3, stop_at_eos=False) == generate_ids(
        ours, prompt, max_new_tokens=12, temperature=0, stop_at_eos=False
    )


def test_top_p_and_top_k_filter_the_distribution():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -5.0]])
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, SamplingParams(top_k=2), gen)) for _ in range(200)}
    assert draws == {0, 1}
    # softmax ≈ [0.66, 0.24, 0.09, ...]: top_p 0.8 keeps the first two only.
    draws = {int(sample_next(logits, SamplingParams(top_p=0.8), gen)) for _ in range(200)}
    assert draws == {0, 1}
    assert {int(sample_next(logits, SamplingParams(top_p=0.5), gen)) for _ in range(50)} == {0}


def test_text_api_streaming_equals_batch_and_stops(pair):
    ours, _ = pair
    tok = load_tokenizer()
    full = generate(ours, tok, "Hello there", max_new_tokens=30, temperature=0, stop_at_eos=False)
    streamed = "".join(stream_text(ours, tok, "Hello there", max_new_tokens=30, temperature=0, stop_at_eos=False))
    assert streamed == full and len(full) > 0
    stop = full[5:8]
    cut = generate(ours, tok, "Hello there", max_new_tokens=30, temperature=0, stop=[stop], stop_at_eos=False)
    assert cut == full[: full.index(stop)]
    assert generate(ours, tok, ["Hello there", "Hi"], max_new_tokens=30, temperature=0, stop_at_eos=False)[0] == full


def test_streamer_holds_partial_characters_and_stop_prefixes():
    tok = load_tokenizer()
    ids = tok.encode("ab🙂cd END tail")
    s = TextStreamer(tok, stop=[" END"])
    out = "".join(s.push(i) for i in ids) + s.flush()
    assert out == "ab🙂cd" and "\ufffd" not in out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1), "temperature=-1"),
        (dict(top_p=0), "top_p=0"),
        (dict(top_k=0), "top_k=0"),
        (dict(max_new_tokens=0), "max_new_tokens=0"),
        (dict(repetition_penalty=0), "repetition_penalty=0"),
        (dict(stop=[""]), "stop="),
    ],
)
def test_out_of_range_sampling_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_prompt_longer_than_context_errors_or_truncates(tiny_model):
    long_prompt = list(range(1, 200))  # debug-tiny has a 128-token context
    with pytest.raises(ValueError, match="prompt 0 has 199 tokens.*at most 118 fit"):
        generate_ids(tiny_model, [long_prompt], max_new_tokens=10)
    out = generate_ids(
        tiny_model, [long_prompt], max_new_tokens=10, temperature=0, truncate_prompt=True, stop_at_eos=False
    )
    assert len(out[0]) == 10
    with pytest.raises(ValueError, match="leaves no room"):
        generate_ids(tiny_model, [[1]], max_new_tokens=128)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        generate_ids(tiny_model, [[]], max_new_tokens=4)


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (the one-row kernel splits over threads), then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("blocks", [2, 3, 7, 500])  # 500: more blocks (threads) than output rows
@pytest.mark.parametrize("bias", [True, False])
def test_split_row_linear_equals_linear(blocks, bias):
    torch.manual_seed(blocks)
    linear = torch.nn.Linear(96, 201, bias=bias)  # 201 rows: a remainder for every block count
    x = torch.randn(96)
    with torch.inference_mode():
        torch.testing.assert_close(
            split_row_linear(x, linear.weight, linear.bias, blocks), linear(x), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 16, 32, 33])
def test_decode_linear_equals_linear_for_every_row_count(rows, packed, two_threads):
    if packed and not packing_available():
        pytest.skip("this PyTorch build has no oneDNN packed linear")
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 200)
    x = torch.randn(rows, 1, 96)
    with torch.inference_mode():
        torch.testing.assert_close(DecodeLinear(linear, packed=packed)(x), linear(x), rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    DecodeLinear(linear, packed=packed)(x).sum().backward()  # with autograd: plain F.linear, gradients flow
    torch.testing.assert_close(x.grad, linear.weight.sum(0).expand(rows, 1, 96))


def test_one_row_path_is_the_measured_one_and_measured_once(monkeypatch, two_threads):
    weight = torch.randn(300, 64)
    monkeypatch.setattr(decode_linear, "_split_pays", {})
    choice = split_row_pays(weight, 2)
    assert isinstance(choice, bool) and decode_linear._split_pays == {(2, (300, 64)): choice}
    monkeypatch.setattr(decode_linear, "split_row_linear", None)  # a second timing would call it
    assert split_row_pays(weight, 2) is choice
    model = GPT(GPTConfig.from_name("debug-tiny")).eval()
    largest = model.lm_head.weight  # the tied head: the most bytes, where the choice is measured
    for measured in (True, False):
        monkeypatch.setattr(decode_linear, "_split_pays", {(2, tuple(largest.shape)): measured})
        with torch.inference_mode(), decode_linears(model, max_rows=1):
            assert {m.splittable for m in model.modules() if isinstance(m, DecodeLinear)} == {measured}


@pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN packed linear")
def test_decode_linears_restore_the_model_and_keep_packed_weights_until_they_change(tmp_path):
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path)
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    with decode_linears(model, max_rows=8) as swapped:
        assert swapped == 4 * model.config.n_layer + 1  # every block linear and the tied LM head
        assert isinstance(model.lm_head, DecodeLinear) and model.lm_head.weight is model.transformer.wte.weight
        packed = model.transformer.h[0].mlp.c_fc.packed
        assert packed is not None
    assert type(model.lm_head) is torch.nn.Linear
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before
    with decode_linears(model, max_rows=8):
        assert model.transformer.h[0].mlp.c_fc.packed is packed  # reused: the weight has not changed
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(2)  # an in-place update (an optimizer step) makes it stale
    with decode_linears(model, max_rows=8):
        repacked = model.transformer.h[0].mlp.c_fc.packed
        assert repacked is not packed
        with torch.inference_mode():
            x = torch.randn(4, model.config.n_embd)
            fc = model.transformer.h[0].mlp.c_fc
            torch.testing.assert_close(fc(x), torch.nn.functional.linear(x, fc.weight, fc.bias), rtol=1e-5, atol=1e-5)
    with decode_linears(model, max_rows=1) as swapped:
        assert swapped and model.transformer.h[0].mlp.c_fc.packed is None  # batch 1 needs no packed copy
    assert release_packed_weights(model) == 4 * model.config.n_layer + 1
    assert release_packed_weights(model) == 0


def test_decoding_on_two_threads_matches_one_thread_and_rows_decoded_alone(pair, two_threads):
    ours, _ = pair
    tok = load_tokenizer()
    prompts = [tok.encode(f"Sequence number {i} says") for i in range(8)]  # batch 8: packed weights
    batched = generate_ids(ours, prompts, max_new_tokens=12, temperature=0, stop_at_eos=False)
    alone = [generate_ids(ours, [p], max_new_tokens=12, temperature=0, stop_at_eos=False)[0] for p in prompts]
    torch.set_num_threads(1)
    one_thread = [generate_ids(ours, [p], max_new_tokens=12, temperature=0, stop_at_eos=False)[0] for p in prompts]
    assert batched == alone == one_thread
