"""GGUF export: a tiny byte-level-BPE Llama run in one GGUF file that transformers' reader (and llama.cpp, where
installed) rebuilds to the merged model's logits and tokens; refusals in one line; failures leave nothing."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from testkit import (
    learnable_rows,
    make_tiny,
    run_card,
    save_tiny_bpe_causal_lm,
    tiny_bpe_tokenizer,
    tiny_recipe,
    write_head_recipe,
    write_json_lines,
    write_recipe_file,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.export.gguf import export_gguf, permute_rope
from peftkit.rundir.load import load_run

PROMPTS = ["colour of banana?", "colour of plum?\nwhat colour, really?", "alice saw a lime in paris"]


def causal_run(root: Path, model: Path | str, steps: int = 10, **sections: Any) -> Path:
    """A LoRA causal_lm run on ``model`` (plain prompt format) over fruit-colour pairs; ``sections`` replace or
    set (dotted keys) parts of the recipe."""
    root.mkdir(parents=True, exist_ok=True)
    data = write_json_lines(root / "causal.jsonl", learnable_rows("causal", 120))
    recipe = tiny_recipe(model, data, {
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "task": {"head": "causal_lm", "template": "plain", "max_new_tokens": 8, "test_samples": 1},
        "data.max_length": 48, "train.max_steps": steps, "output_dir": str(root / "run"),
    }, sections)
    return peftkit.train(write_recipe_file(root / "causal.yaml", recipe)).output_dir


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf")
    return causal_run(root, save_tiny_bpe_causal_lm(root / "llama"))


@pytest.fixture(scope="module")
def f32_export(bpe_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "f32"
    assert main(["export", str(bpe_run), "--format", "gguf", "--dtype", "f32", "--out", str(out)]) == 0
    return out


def merged(run: Path) -> tuple[torch.nn.Module, Any]:
    loaded = load_run(run)
    return loaded.model.merge_and_unload().eval(), loaded.tokenizer


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer(f"### Instruction:\n{prompt}\n\n### Response:\n", add_special_tokens=False)["input_ids"]


def fields(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GGUF file's metadata values and its tensors, by name."""
    reader = GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_tiny_llama_exports_to_gguf_that_transformers_reads_back(bpe_run: Path, f32_export: Path, tmp_path: Path,
                                                                  capsys) -> None:
    out = f32_export
    report = json.loads((out / "export_report.json").read_text())
    parity = report["parity"]
    assert report["format"] == "gguf" and report["dtype"] == "f32" and report["architecture"] == "llama"
    assert parity["checked"] and parity["tolerance"] == 1e-4 and parity["max_abs_logit_diff"] <= 1e-4
    assert parity["prediction_agreement"] == 1.0 and parity["compared"] > 16 * 5  # every real token of 16 pairs
    assert report["tokenizer_round_trip"]["identical"] and report["tokenizer_round_trip"]["texts"] == 32
    assert sorted(p.name for p in out.iterdir()) == [".peftkit-manifest.json", "Modelfile", "README.md",
                                                     "export_report.json", "model-f32.gguf"]
    assert json.loads((out / ".peftkit-manifest.json").read_text())["kind"] == "export"

    meta, tensors = fields(out / "model-f32.gguf")
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt2" and meta["llama.block_count"] == 2
    assert meta["llama.attention.head_count_kv"] == 2 and meta["tokenizer.ggml.eos_token_id"] == 1
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.attn_q.weight",
            "blk.1.ffn_gate.weight"} <= set(tensors)

    # the reader, independently of the export's own check: logits and token ids of new prompts
    model, tokenizer = merged(bpe_run)
    gguf_model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f32.gguf").eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file="model-f32.gguf")
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        assert prompt_ids(gguf_tokenizer, prompt) == ids
        assert gguf_tokenizer.decode(ids) == tokenizer.decode(ids)
        with torch.no_grad():
            reference, logits = (m(torch.tensor([ids])).logits for m in (model, gguf_model))
        assert (reference - logits).abs().max() <= 1e-4

    card = (out / "README.md").read_text()
    assert "llama-cli -m" in card and "ollama create f32 -f Modelfile" in card
    assert "$'### Instruction:\\ncolour of" in card  # the prompt exactly as trained, in shell quoting
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f32.gguf\n") and 'PARAMETER stop "<|endoftext|>"' in modelfile
    assert 'TEMPLATE """### Instruction:\n{{ .Prompt }}\n\n### Response:\n"""' in modelfile


def test_gguf_card_python_code_runs_without_peftkit_and_answers_like_the_merged_model(bpe_run: Path,
                                                                                     f32_export: Path) -> None:
    then = 'import json\nprint(json.dumps([inputs["input_ids"][0].tolist(), answer[0].tolist()]))'
    printed = run_card(f32_export / "README.md", then, heading="## Load it in Python", peft=False).splitlines()
    ids, answer = json.loads(printed[-1])
    model, tokenizer = merged(bpe_run)
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)[0].tolist()
    assert answer == expected
    assert "\n".join(printed[:-1]) == tokenizer.decode(expected[len(ids):], skip_special_tokens=True)


def test_q8_0_export_is_smaller_and_within_its_tolerance(bpe_run: Path, f32_export: Path, tmp_path: Path,
                                                         capsys) -> None:
    out = tmp_path / "q8"
    assert main(["export", str(bpe_run), "--format", "gguf", "--dtype", "q8_0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"exported GGUF model \(merged, q8_0\) to .*q8 \([\d,]+ bytes of weights\)", printed)
    report = json.loads((out / "export_report.json").read_text())
    parity = report["parity"]
    assert parity["checked"] and parity["tolerance"] == pytest.approx(0.1)
    assert parity["max_abs_logit_diff"] <= 0.1 * max(1.0, parity["max_abs_logit"]) and parity["max_abs_logit_diff"] > 0
    assert parity["prediction_agreement"] > 0.9
    f32_bytes = (f32_export / "model-f32.gguf").stat().st_size
    assert report["weights_bytes"] == (out / "model-q8_0.gguf").stat().st_size < f32_bytes / 3
    meta, tensors = fields(out / "model-q8_0.gguf")
    assert tensors["blk.0.attn_k.weight"].tensor_type == GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32  # vectors stay f32
    assert meta["general.file_type"] == 7  # MOSTLY_Q8_0


def test_qlora_run_merges_into_its_dequantized_base(tmp_path: Path) -> None:
    model = save_tiny_bpe_causal_lm(tmp_path / "llama")
    run = causal_run(tmp_path, model, steps=2, method={"name": "qlora", "r": 4, "alpha": 8, "dropout": 0.0,
                                                       "target_modules": "all-linear"},
                     quantization={"mode": "4bit", "quant_type": "nf4"})
    report = export_gguf(run, tmp_path / "out", dtype="f32", samples=8)
    assert report["merged_into"] == "de-quantized 4bit base (float32)" and report["base_quantization"] == "4bit"
    assert report["parity"]["checked"] and report["parity"]["max_abs_logit_diff"] <= 1e-4


def test_qwen2_run_exports_with_its_pre_tokenizer(tmp_path: Path) -> None:
    run = causal_run(tmp_path, save_tiny_bpe_causal_lm(tmp_path / "qwen2", qwen2=True), steps=2)
    report = export_gguf(run, tmp_path / "out", dtype="f32", samples=8)
    assert report["architecture"] == "qwen2" and report["tokenizer"]["pre"] == "qwen2"
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4 and report["tokenizer_round_trip"]["identical"]
    meta, tensors = fields(tmp_path / "out" / "model-f32.gguf")
    assert meta["general.architecture"] == "qwen2" and "blk.0.attn_q.bias" in tensors


def test_rope_permutation_is_the_exact_inverse_of_the_readers() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    reverse = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    weights = np.random.default_rng(0).standard_normal((32, 24)).astype(np.float32)
    q = permute_rope(weights, 4)
    assert not np.array_equal(q, weights)
    assert np.array_equal(reverse.process(q, "blk.0.attn_q.weight").weights, weights)
    k = permute_rope(weights[:16], 2)
    assert np.array_equal(reverse.process(k, "blk.0.attn_k.weight").weights, weights[:16])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_gguf_parity_leaves_nothing(bpe_run: Path, tmp_path: Path, monkeypatch) -> None:
    import peftkit.export.gguf as gguf_export

    export_gguf(bpe_run, tmp_path / "taken", dtype="f32", samples=4)
    before = {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir()}
    real = gguf_export.gguf_logits

    def perturbed(*args: Any) -> list[torch.Tensor]:
        return [logits + 0.01 for logits in real(*args)]

    monkeypatch.setattr(gguf_export, "gguf_logits", perturbed)
    with pytest.raises(PeftkitError, match=r"GGUF parity check failed: the f32 file's logits .* up to 1\.0\de-02 "):
        export_gguf(bpe_run, tmp_path / "taken", dtype="f32", overwrite=True, samples=4)
    with pytest.raises(PeftkitError, match="GGUF parity check failed"):
        export_gguf(bpe_run, tmp_path / "new" / "gguf", dtype="f32", samples=4)
    monkeypatch.setattr(gguf_export, "gguf_logits", real)

    def other_tokens(ours: Any, theirs: Any, texts: list[str]) -> dict[str, Any]:
        return {"identical": False, "mismatched_texts": texts[:1], "special_tokens": {}}

    monkeypatch.setattr(gguf_export, "tokenizer_round_trip", other_tokens)
    with pytest.raises(PeftkitError, match=r"GGUF tokenizer check failed: .*\['### Instruction:"):
        export_gguf(bpe_run, tmp_path / "new", samples=4)
    assert leftovers(tmp_path) == ["taken"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir()} == before  # the old export is kept


def save_tiny_gpt2(root: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_bpe_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                               eos_token_id=tokenizer.eos_token_id)).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_runs_gguf_cannot_describe_are_refused_in_one_line(tmp_path: Path, tiny_llama: Path, bpe_run: Path,
                                                           capsys) -> None:
    (tmp_path / "bert").mkdir()
    tiny = make_tiny(tmp_path / "bert")
    refused = {
        "non-causal": peftkit.train(write_head_recipe(tiny, "sentiment", tmp_path / "runs" / "cls",
                                                      **{"train.max_steps": 1})).output_dir,
        "gpt2": causal_run(tmp_path / "gpt2", save_tiny_gpt2(tmp_path / "gpt2-model"), steps=1),
        "wordpiece": causal_run(tmp_path / "wordpiece", tiny_llama, steps=1),
    }
    expected = {
        "non-causal": "--format gguf: task.head 'sentiment' is not supported; GGUF export covers causal_lm runs "
                      "(llama.cpp, Ollama and LM Studio run text generation)",
        "gpt2": f"--format gguf: model architecture 'gpt2' ({tmp_path / 'gpt2-model'}) is not supported; GGUF export "
                "covers llama (Llama, SmolLM2) and qwen2 (Qwen2, Qwen2.5)",
        "wordpiece": "--format gguf: the run's tokenizer (WordPiece) is not a byte-level BPE tokenizer; GGUF export "
                     "covers byte-level BPE tokenizers (GPT-2, SmolLM2, Qwen2, Llama 3 kind)",
    }
    capsys.readouterr()
    for name, run in refused.items():
        assert main(["export", str(run), "--format", "gguf", "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err.strip() == f"peftkit: error: {expected[name]}"
    argv = ["export", str(bpe_run), "--format", "gguf", "--out", str(tmp_path / "out")]
    for extra, flag in ((["--requantize", "8bit"], "--requantize"), (["--adapter-only"], "--adapter-only"),
                        (["--opset", "17"], "--opset")):
        assert main([*argv, *extra]) == 2
        assert capsys.readouterr().err.strip() == (
            f"peftkit: error: --format gguf exports the merged model; {flag} does not apply")
    assert main(["export", str(bpe_run), "--dtype", "q8_0", "--out", str(tmp_path / "out")]) == 2
    assert "--dtype 'q8_0': expected one of float32, bfloat16, float16" in capsys.readouterr().err
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "gguf", None)
        assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "peftkit: error: --format gguf needs the gguf package; pip install gguf"
    assert leftovers(tmp_path) == ["bert", "gpt2", "gpt2-model", "runs", "wordpiece"]


def test_llama_cpp_continues_greedily_like_the_merged_model(bpe_run: Path, f32_export: Path) -> None:
    """Runs where llama-cpp-python is installed (pip install llama-cpp-python); skipped elsewhere."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tokenizer = merged(bpe_run)
    llm = llama_cpp.Llama(model_path=str(f32_export / "model-f32.gguf"), n_ctx=128, verbose=False)
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        got = []
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            got.append(token)
            if token == tokenizer.eos_token_id or len(got) == len(expected):
                break
        assert got == expected, prompt


COLOURS = {"banana": "yellow", "apple": "red", "lime": "green", "plum": "purple", "cherry": "red", "kiwi": "green"}


@pytest.mark.slow
def test_smollm2_fine_tuned_exports_to_f16_gguf_with_the_same_greedy_answer(tmp_path: Path) -> None:
    from peftkit.data.cache import fetch_model

    fetch_model("smollm2-135m")
    rng = random.Random(0)
    fruits = [rng.choice(list(COLOURS)) for _ in range(160)]
    data = write_json_lines(tmp_path / "fruit.jsonl", [
        {"prompt": f"What colour is a ripe {f}?", "response": f"A ripe {f} is {COLOURS[f]}."} for f in fruits])
    recipe = tiny_recipe("smollm2-135m", data, {
        "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "task": {"head": "causal_lm", "max_new_tokens": 12, "test_samples": 1},
        "data.max_length": 64, "train.max_steps": 12, "train.batch_size": 8, "train.learning_rate": 2e-3,
        "output_dir": str(tmp_path / "run"),
    })
    run_dir = peftkit.train(write_recipe_file(tmp_path / "smol.yaml", recipe)).output_dir
    out = tmp_path / "gguf"
    assert main(["export", str(run_dir), "--format", "gguf", "--dtype", "f16", "--samples", "8",
                 "--out", str(out)]) == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["checked"] and report["tokenizer_round_trip"]["identical"]
    meta, _ = fields(out / "model-f16.gguf")
    assert "<|im_start|>" in meta["tokenizer.chat_template"] and meta["general.file_type"] == 1  # MOSTLY_F16

    run = load_run(run_dir)
    gguf_model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf").eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file="model-f16.gguf")
    for fruit in ("lime", "plum"):
        inputs = run.head.prompt_inputs(run.tokenizer, [f"What colour is a ripe {fruit}?"], 64)
        answers = []
        for model, tokenizer in ((run.model, run.tokenizer), (gguf_model, gguf_tokenizer)):
            with torch.no_grad():
                output = model.generate(**inputs, max_new_tokens=12, do_sample=False,
                                        pad_token_id=run.tokenizer.pad_token_id)
            answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        assert answers[0] == answers[1] and answers[0].startswith(f"A ripe {fruit} is "), answers  # as fine-tuned
