"""The lm-eval adapter against the harness's own `hf` model on the same checkpoint, on local tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

QUESTIONS = [
    ("The capital of France is", [" Paris", " Rome", " a city in the north"], 0),
    ("Two plus two equals", [" four", " five", " twenty-two"], 0),
    ("The sky on a clear day is", [" blue", " green"], 0),
    ("", [" Hello world", " Goodbye"], 1),  # empty context: EOS is the context
    ("A long context " + "that repeats itself " * 40 + "ends with", [" this", " that"], 0),  # past 128 tokens
    ("Trailing space moves to the continuation ", ["word", "other words here"], 0),
]
# The long document spans three 128-token rolling windows. (A document of one repeated word would not do:
# HFLM's logits cache then shares one forward pass between windows with identical inputs but different
# continuation lengths, and scores the shorter one at the wrong positions.)
DOCS = [
    "To be, or not to be, that is the question.",
    "Short.",
    " ".join(f"Line {i}: the quick brown fox jumps over {i % 7} lazy dogs." for i in range(25)),
]


def _write_tasks(root):
    data = root / "data"
    data.mkdir()
    (data / "mc.jsonl").write_text(
        "".join(json.dumps({"q": q, "choices": c, "label": lab}) + "\n" for q, c, lab in QUESTIONS)
    )
    (data / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS))
    (data / "gen.jsonl").write_text("".join(json.dumps({"q": q, "a": "x"}) + "\n" for q, _, _ in QUESTIONS[:3]))
    tasks = root / "tasks"
    tasks.mkdir()
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n"
    (tasks / "local_mc.yaml").write_text(
        "task: local_mc\n"
        + common.format(path=data / "mc.jsonl")
        + textwrap.dedent("""\
        output_type: multiple_choice
        doc_to_text: "{{q}}"
        doc_to_choice: "{{choices}}"
        doc_to_target: "{{label}}"
        target_delimiter: ""
        metric_list:
          - metric: acc
        """)
    )
    (tasks / "local_ppl.yaml").write_text(
        "task: local_ppl\n"
        + common.format(path=data / "docs.jsonl")
        + textwrap.dedent("""\
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{text}}"
        metric_list:
          - metric: word_perplexity
          - metric: bits_per_byte
        """)
    )
    (tasks / "local_gen.yaml").write_text(
        "task: local_gen\n"
        + common.format(path=data / "gen.jsonl")
        + textwrap.dedent("""\
        output_type: generate_until
        doc_to_text: "{{q}}"
        doc_to_target: "{{a}}"
        generation_kwargs:
          until: ["\\n", "."]
          max_gen_toks: 12
          do_sample: false
        metric_list:
          - metric: exact_match
        """)
    )
    return tasks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from cerebras_gpt import GPT, GPTConfig

    root = tmp_path_factory.mktemp("lm_eval")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny")).eval()
    model.save_pretrained(root / "model")
    return root, _write_tasks(root)


def _requests(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_loglikelihoods_equal_hf(setup):
    from lm_eval.models.huggingface import HFLM

    from cerebras_gpt.evaluate.lm_eval_adapter import CerebrasGPTLM

    root, _ = setup
    ours = CerebrasGPTLM(pretrained=str(root / "model"), batch_size=3, device="cpu")
    hf = HFLM(pretrained=str(root / "model"), batch_size=3, device="cpu", dtype="float32")
    pairs = [(q, c) for q, choices, _ in QUESTIONS for c in choices]
    a = ours.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    b = hf.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    assert [g for _, g in a] == [g for _, g in b]
    torch.testing.assert_close(torch.tensor([x for x, _ in a]), torch.tensor([x for x, _ in b]), rtol=1e-5, atol=1e-4)
    docs = [(d,) for d in DOCS]
    torch.testing.assert_close(
        torch.tensor(ours.loglikelihood_rolling(_requests("loglikelihood_rolling", docs))),
        torch.tensor(hf.loglikelihood_rolling(_requests("loglikelihood_rolling", docs))),
        rtol=1e-5,
        atol=1e-3,
    )
    gen = [(q, {"until": ["\n", "."], "max_gen_toks": 12, "do_sample": False}) for q, _, _ in QUESTIONS[:3]]
    assert ours.generate_until(_requests("generate_until", gen)) == hf.generate_until(_requests("generate_until", gen))


def test_local_tasks_through_the_harness(setup):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from cerebras_gpt.evaluate.lm_eval_adapter import CerebrasGPTLM, run_tasks

    root, tasks = setup
    names = ["local_mc", "local_ppl", "local_gen"]
    ours = run_tasks(CerebrasGPTLM(pretrained=str(root / "model"), batch_size=4), names, [str(tasks)], log_samples=True)
    hf = simple_evaluate(
        model="hf",
        model_args=f"pretrained={root / 'model'},dtype=float32",
        tasks=names,
        task_manager=TaskManager(include_path=[str(tasks)], include_defaults=False),
        batch_size=4,
        device="cpu",
        log_samples=True,
    )
    for task in names:
        for metric, value in hf["results"][task].items():
            if isinstance(value, float):
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4), (task, metric)
    resp = lambda r: [s["filtered_resps"] for s in r["samples"]["local_mc"]]  # noqa: E731
    for x, y in zip(resp(ours), resp(hf)):
        torch.testing.assert_close(
            torch.tensor([v[0] for v in x]), torch.tensor([v[0] for v in y]), rtol=1e-5, atol=1e-4
        )


def test_eval_command_runs_tasks(setup, tmp_path):
    from cerebras_gpt.cli import main

    root, tasks = setup
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(root / "model"),
                "--tasks",
                "local_mc",
                "--include-path",
                str(tasks),
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert 0 <= json.loads(out.read_text())["lm_eval"]["results"]["local_mc"]["acc,none"] <= 1


@pytest.mark.slow  # the lm_eval command indexes all of lm-eval's built-in tasks first (~20 s)
def test_lm_eval_command_line(setup, tmp_path):
    """`lm_eval --model cerebras_gpt` itself, through the .pth hook (installed into a scratch site dir)."""
    from cerebras_gpt.evaluate.lm_eval_adapter import install_lm_eval_hook

    root, tasks = setup
    site = tmp_path / "site"
    site.mkdir()
    install_lm_eval_hook(str(site))
    lm_eval = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    # site.addsitedir runs the .pth as site.py would for site-packages; argv[0] is the lm_eval script.
    code = (
        f"import sys, site; sys.argv = [{lm_eval!r}] + sys.argv[1:]; site.addsitedir({str(site)!r}); "
        "from lm_eval.__main__ import cli_evaluate; cli_evaluate()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--model",
            "cerebras_gpt",
            "--model_args",
            f"pretrained={root / 'model'}",
            "--device",
            "cpu",
            "--tasks",
            "local_mc",
            "--include_path",
            str(tasks),
            "--output_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "local_mc" in proc.stdout and "acc" in proc.stdout
