"""What a run holds: a quiet start, the memory sampler, no checkpoint left mapped, the estimate's terms."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from testkit import tiny_recipe

from peftkit import quiet
from peftkit.hardware import device as devices

CPU = devices.Device("cpu", "cpu", devices.cpu_memory())


def test_options_prints_no_kernels_warning() -> None:
    done = subprocess.run([sys.executable, "-m", "peftkit", "options"], capture_output=True, text=True, check=True)
    assert "model.name" in done.stdout
    assert quiet.KERNELS_MESSAGE not in done.stdout + done.stderr
    assert "kernels" not in done.stderr


def test_kernels_warning_is_dropped_and_others_pass(caplog) -> None:
    logger = logging.getLogger(quiet.BNB_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=quiet.BNB_CPU_LOGGER):
        logger.warning("%s: No module named 'kernels'", quiet.KERNELS_MESSAGE)
        logger.warning("a real bitsandbytes problem")
    assert [r.getMessage() for r in caplog.records] == ["a real bitsandbytes problem"]


def test_only_the_named_library_warnings_are_filtered() -> None:
    """peftkit (and its CLI) drop transformers' renamed-checkpointing FutureWarnings; every other warning passes."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.install()
        quiet.for_cli()
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("a real peft warning", UserWarning, stacklevel=1)
        warnings.warn("a real transformers deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a real peft warning", "a real transformers deprecation"]


def test_sampler_catches_a_short_spike_in_its_phase() -> None:
    import mmap
    import time

    from peftkit.bench.memory import MemorySampler

    size = 64 * 2**20
    sampler = MemorySampler().start("load")
    time.sleep(0.05)
    sampler.phase("train")
    # An anonymous mapping that the test unmaps itself: 64 MiB of private pages that are surely handed back on
    # close (a freed tensor may stay in the allocator's heap, which is not what this test is about).
    spike = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, size, mmap.PAGESIZE):
        spike[offset] = 1
    seen, deadline = sampler.samples, time.monotonic() + 5
    while sampler.samples < seen + 3 and time.monotonic() < deadline:  # held for three samples
        time.sleep(0.001)
    spike.close()
    sampler.phase("evaluate")
    time.sleep(0.05)
    sampler.stop()
    summary = sampler.summary()
    phases = summary["phases"]
    assert phases["train"]["private_bytes"] > 60 * 2**20
    assert phases["load"]["private_bytes"] < 16 * 2**20 and phases["evaluate"]["private_bytes"] < 16 * 2**20
    assert summary["private_peak_phase"] == "train" and summary["rss_peak_bytes"] >= summary["private_peak_bytes"]


def test_no_checkpoint_stays_mapped_after_a_4bit_load(minilm_dir, monkeypatch) -> None:
    import gc

    import torch

    from peftkit.config.load import recipe_from_dict
    from peftkit.model import loading, weights
    from peftkit.registry import HEADS

    recipe = recipe_from_dict({"model": {"name": str(minilm_dir)}, "task": {"head": "sentiment"},
                               "method": {"name": "qlora"},
                               "quantization": {"mode": "4bit", "quant_type": "nf4", "compute_dtype": "float32"}})
    head = HEADS.get("sentiment")(recipe.task)
    model_section, nf4 = recipe.model, recipe.quantization

    def mapped_here() -> list[str]:
        # /proc/self/maps names a file by its real path; the tests' cache reaches the models through a link
        return [path for path in weights.mapped_files() if path.startswith(str(minilm_dir.resolve()))]

    with monkeypatch.context() as patch:  # without the release, transformers leaves the float file mapped
        patch.setattr(loading, "release_checkpoint", lambda model: 0)
        kept, _ = loading.load_base_model(model_section, nf4, head, ["negative", "positive"])
        assert mapped_here()
        del kept
        gc.collect()
    model, _ = loading.load_base_model(model_section, nf4, head, ["negative", "positive"])
    assert mapped_here() == []
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[101, 2204, 3185, 102]])).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def tiny_estimate_recipe(minilm_dir, **sections):
    """A LoRA recipe on ``minilm_dir`` with batches of 4 and no data section; ``sections`` replace whole sections."""
    from peftkit.config.load import recipe_from_dict

    return recipe_from_dict(tiny_recipe(minilm_dir, None, {
        "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]},
        "train": {"batch_size": 4, "eval_batch_size": 4},
    }, sections))


def test_estimate_terms_on_a_tiny_model(minilm_dir) -> None:
    from peftkit.hardware.auto import estimate_on
    from peftkit.hardware.estimate import ALLOCATOR_RETENTION, RUNTIME_OVERHEAD, meta_model

    labels = ["negative", "positive"]
    lora = estimate_on(tiny_estimate_recipe(minilm_dir), CPU, sequence_length=32, labels=labels)
    model = meta_model(tiny_estimate_recipe(minilm_dir), labels)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora.trainable_params == trainable
    assert lora.weights == 4 * lora.total_params and lora.quantized_weights == 0
    assert lora.gradients == 4 * trainable and lora.optimizer == 8 * trainable  # AdamW: two fp32 moments
    assert lora.activations_from == "traced" and lora.activations > 0
    names = [name for name, _ in lora.terms()]
    assert names == ["weights", "quantized weights", "gradients", "optimizer state", "activations", "evaluation",
                     "runtime overhead"]
    assert sum(value for _, value in lora.terms()) == lora.total
    assert lora.family == "adapter" and lora.retained == int(ALLOCATOR_RETENTION["cpu"]["adapter"] * lora.activations)
    assert lora.runtime_overhead >= RUNTIME_OVERHEAD["cpu"] + lora.retained

    wider = tiny_estimate_recipe(minilm_dir, train={"batch_size": 8, "eval_batch_size": 4})
    double = estimate_on(wider, CPU, sequence_length=32, labels=labels)
    assert 1.8 < double.activations / lora.activations < 2.2  # saved tensors scale with the batch

    nf4 = estimate_on(tiny_estimate_recipe(minilm_dir, method={"name": "qlora", "r": 4,
                                                              "target_modules": ["query", "value"]},
                                        quantization={"mode": "4bit", "quant_type": "nf4"}),
                   CPU, sequence_length=32, labels=labels)
    assert 0 < nf4.quantized_weights < nf4.weights < lora.weights  # linear layers at ~4.1 bits, the rest fp32
    assert nf4.weights + nf4.quantized_weights * 8 < lora.weights + 0.05 * lora.weights

    plain_adamw = {"batch_size": 4, "eval_batch_size": 4, "optim": "adamw_torch"}
    full = estimate_on(tiny_estimate_recipe(minilm_dir, method={"name": "full"}, train=plain_adamw),
                       sequence_length=32, labels=labels, device=CPU)
    largest = max(p.numel() for p in meta_model(tiny_estimate_recipe(minilm_dir, method={"name": "full"}),
                                                labels).parameters())
    assert full.transient >= 2 * 4 * largest  # AdamW's step temporaries for the embedding matrix
    fused = estimate_on(tiny_estimate_recipe(minilm_dir, method={"name": "full"}), sequence_length=32,
                        labels=labels, device=CPU)  # auto: the fused step, in place
    assert fused.transient == fused.activations < full.transient and fused.optimizer == full.optimizer


def test_allocator_retention_is_the_method_familys(minilm_dir, monkeypatch) -> None:
    """Full FT, adapters and adapters on a quantized base each keep their own share of freed activations."""
    from torch import nn

    from peftkit.hardware import estimate as estimating
    from peftkit.hardware.auto import estimate_on
    from peftkit.hardware.estimate import meta_model

    shares = {"full": 0.1, "adapter": 0.5, "quantized": 0.9}
    monkeypatch.setitem(estimating.ALLOCATOR_RETENTION, "cpu", shares)
    monkeypatch.setitem(estimating.DEQUANT_RETENTION, "cpu", 0.0)
    labels = ["negative", "positive"]
    qlora = {"name": "qlora", "r": 4, "target_modules": ["query", "value"]}
    for family, sections in (("full", {"method": {"name": "full"}}), ("adapter", {}),
                             ("quantized", {"method": qlora, "quantization": {"mode": "4bit"}})):
        e = estimate_on(tiny_estimate_recipe(minilm_dir, **sections), CPU, sequence_length=32, labels=labels)
        assert e.family == family
        assert e.retained == int(shares[family] * e.activations)
        assert e.eval_retained == int(shares[family] * e.evaluation)
    body = sum(m.weight.numel() for name, m in meta_model(tiny_estimate_recipe(minilm_dir), labels).named_modules()
               if isinstance(m, nn.Linear) and "lora_" not in name and "classifier" not in name)  # the pooler too
    assert e.dequantized_total == 4 * body  # de-quantized in float32, the CPU's compute dtype
    monkeypatch.setitem(estimating.DEQUANT_RETENTION, "cpu", 5.0)  # the de-quantized layers outweigh the activations
    again = estimate_on(tiny_estimate_recipe(minilm_dir, method=qlora, quantization={"mode": "4bit"}), CPU,
                        sequence_length=32, labels=labels)
    assert again.retained == int(5.0 * again.dequantized_total) > int(shares["quantized"] * again.activations)


def test_the_evaluation_phase_grows_with_the_eval_batch_and_can_peak(minilm_dir) -> None:
    """Evaluation is a phase of its own: its batch, what the allocator keeps of it and, on a quantized base, a layer
    de-quantized and repacked (bitsandbytes' CPU inference format). A large eval batch makes it the peak."""
    from torch import nn

    from peftkit.hardware.auto import estimate_on
    from peftkit.hardware.estimate import EVAL_DEQUANT_BYTES, meta_model

    labels = ["negative", "positive"]

    def predicted(eval_batch: int, **sections):
        train = {"batch_size": 4, "eval_batch_size": eval_batch}
        return estimate_on(tiny_estimate_recipe(minilm_dir, train=train, **sections), CPU, sequence_length=32,
                           labels=labels)

    small, large = predicted(4), predicted(512)
    assert small.peak_phase == "train" and large.peak_phase == "evaluate"
    assert large.evaluation > 100 * small.evaluation  # 128 × the batch
    grown = large.phases()["evaluate"] - small.phases()["evaluate"]
    assert grown == large.evaluation + large.eval_retained - small.evaluation - small.eval_retained > 0
    assert large.activations == small.activations and large.total > small.total
    assert large.total == large.overhead + large.phases()["evaluate"]
    assert sum(value for _, value in large.terms()) == large.total

    qlora = {"name": "qlora", "r": 4, "target_modules": ["query", "value"]}
    nf4 = predicted(4, method=qlora, quantization={"mode": "4bit"})
    widest = max(m.weight.numel() for name, m in meta_model(tiny_estimate_recipe(minilm_dir), labels).named_modules()
                 if isinstance(m, nn.Linear) and ".encoder." in name)  # every linear layer of the body is quantized
    assert nf4.eval_transient == widest * (4 + EVAL_DEQUANT_BYTES["cpu"])  # fp32 de-quantized, then repacked
    assert small.eval_transient == 0


def _saved_by_a_real_forward(model, batch: int, seq: int, autocast: bool) -> int:
    """What a real CPU forward saves for backward (beyond the parameters), and its output."""
    import torch

    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        if tensor.untyped_storage()._cdata not in parameters:
            saved[tensor.untyped_storage()._cdata] = tensor.untyped_storage().nbytes()
        return tensor

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(input_ids=torch.ones(batch, seq, dtype=torch.long)).logits
    return sum(saved.values()) + logits.numel() * logits.element_size()


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_traced_activations_match_a_real_forward(minilm_dir, dropout: float) -> None:
    """The trace (fake CPU tensors standing in for the meta model's) counts what a real CPU forward saves, in fp32
    and under bf16 autocast (a CPU run's `train.precision: bf16`, which saves many tensors in fp32: the per-layer
    formula's 16-bit count was 59 % short on the NER suite), with attention dropout (sdpa's math path) and without
    (CPU's fused kernel)."""
    import torch

    from peftkit.hardware.estimate import meta_model
    from peftkit.hardware.trace import traced_activations
    from peftkit.model.loading import load_base_model
    from peftkit.registry import HEADS, METHODS

    recipe = tiny_estimate_recipe(minilm_dir)
    labels = ["negative", "positive"]
    on_meta = meta_model(recipe, labels)
    head = HEADS.get("sentiment")(recipe.task)
    base, head_modules = load_base_model(recipe.model, recipe.quantization, head, labels)
    real = METHODS.get("lora")(recipe.method).apply(base, head_modules, head.task_type)
    for model in (on_meta, real):
        for module in model.modules():
            if type(module).__name__ == "BertSelfAttention":
                module.dropout.p = dropout  # what the layer passes to sdpa as dropout_p in training
    for autocast in (False, True):
        expected = _saved_by_a_real_forward(real, batch=4, seq=32, autocast=autocast)
        dtype = torch.bfloat16 if autocast else None
        assert traced_activations(on_meta, batch=4, seq=32, autocast=dtype) == expected > 0
        assert traced_activations(real, batch=4, seq=32, autocast=dtype) == expected


def test_a_repeated_trace_comes_from_the_cache_and_a_changed_model_does_not(minilm_dir, monkeypatch) -> None:
    from peftkit.hardware import trace
    from peftkit.hardware.estimate import meta_model

    traced = []
    monkeypatch.setattr(trace, "_TRACED", type(trace._TRACED)())
    monkeypatch.setattr(trace, "_trace", lambda *args: traced.append(args[1:]) or len(traced))
    model = meta_model(tiny_estimate_recipe(minilm_dir), ["negative", "positive"])
    first = trace.traced_activations(model, batch=4, seq=32)
    assert trace.traced_activations(model, batch=4, seq=32) == first and len(traced) == 1
    assert trace.traced_activations(model, batch=4, seq=48) == 2  # other arguments: traced again
    next(m for m in model.modules() if type(m).__name__ == "BertSelfAttention").dropout.p = 0.0
    assert trace.traced_activations(model, batch=4, seq=32) == 3  # a changed model: traced again


def test_fused_attention_keeps_no_attention_probabilities(minilm_dir) -> None:
    """On CUDA sdpa runs fused: what it saves grows linearly with the sequence (inputs, output, one log-sum-exp a
    row); the math path a CPU takes under attention dropout also saves batch × heads × sequence² probabilities in
    every layer (the NER suite's GPU estimate was +58 to +78 % with them)."""
    from peftkit.hardware.estimate import meta_model
    from peftkit.hardware.trace import traced_activations

    model = meta_model(tiny_estimate_recipe(minilm_dir), ["negative", "positive"])
    config = model.config
    fused = {seq: traced_activations(model, batch=4, seq=seq, fused_attention=True) for seq in (16, 32, 48)}
    math = {seq: traced_activations(model, batch=4, seq=seq) for seq in (16, 32, 48)}
    assert fused[48] - fused[32] == fused[32] - fused[16] > 0  # linear (the pooled head adds a constant)
    assert math[48] - math[32] > math[32] - math[16]
    probabilities = config.num_hidden_layers * 4 * config.num_attention_heads * 32 * 32 * 4
    assert math[32] - fused[32] >= probabilities


def test_a_cuda_estimate_counts_fused_attention(minilm_dir) -> None:
    """The same fp32 recipe: on a CUDA device the trace keeps no attention probabilities; under gradient
    checkpointing (the per-layer formula) the 5·a·s/h term of the layer recomputed is dropped."""
    from peftkit.hardware.auto import estimate_on
    from peftkit.hardware.estimate import meta_model

    gpu = devices.Device("cuda", "A100", 80 * 2**30, (8, 0))
    labels = ["negative", "positive"]
    heads = meta_model(tiny_estimate_recipe(minilm_dir), labels).config.num_attention_heads
    for checkpointing in (False, True):
        recipe = tiny_estimate_recipe(minilm_dir, train={"batch_size": 4, "eval_batch_size": 4, "precision": "fp32",
                                                         "gradient_checkpointing": checkpointing})
        on_cpu, on_gpu = (estimate_on(recipe, device, sequence_length=32, labels=labels) for device in (CPU, gpu))
        assert on_cpu.activations_from == on_gpu.activations_from == ("formula" if checkpointing else "traced")
        assert on_gpu.activations < on_cpu.activations
    assert on_cpu.activations - on_gpu.activations == 32 * 4 * 5 * heads * 32 * 2  # s·b·5·a·s, fp32


def test_cli_estimate_prints_every_term(write_recipe, capsys) -> None:
    from peftkit.cli import main

    assert main(["estimate", str(write_recipe())]) == 0
    out = capsys.readouterr().out
    assert "MiB of private memory" in out or "MiB of allocated GPU memory" in out
    for term in ("weights", "quantized weights", "gradients", "optimizer state", "activations", "evaluation",
                 "runtime overhead"):
        assert any(line.strip().startswith(term) and line.strip().endswith("MiB") for line in out.splitlines()), term
    assert "evaluation logits" in out and "(the model's own: " in out


def resolved_recipe(raw: dict, device: devices.Device = CPU):
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.auto import resolved_for

    return resolved_for(recipe_from_dict(raw), device, 32, ["negative", "positive"])


def test_tied_embeddings_count_once_qwen_1_5b_has_1_54_b_parameters() -> None:
    """On the meta device tied embeddings were built untied: Qwen2.5-1.5B counted 1.78 B parameters (and the
    embedding matrix's bytes twice)."""
    from peftkit.config.load import load_recipe
    from peftkit.hardware.auto import resolved_for
    from peftkit.hardware.estimate import estimate
    from peftkit.model.params import parameter_count

    recipe = load_recipe("qwen2.5-1.5b-lora-sft")
    assert parameter_count(recipe.model) == 1_543_714_304
    gpu = devices.Device("cuda", "A100", 80 * 2**30, (8, 0))
    e = estimate(resolved_for(recipe, gpu, 1024, []), 1024, [], device=gpu)
    assert e.base_params == 1_543_714_304 and e.total_params == e.base_params + e.trainable_params
    # bf16 base weights once, the LoRA adapters as fp32 master weights
    assert e.weights == 2 * e.base_params + 4 * e.trainable_params


def test_full_fine_tuning_in_bf16_counts_weights_gradients_and_adamw_in_bf16(tiny_bert) -> None:
    """The Trainer keeps a bf16 model's weights in bf16 and torch's AdamW its moments in the weights' dtype: 8 B full
    fine-tuning was predicted at 16 bytes a parameter instead of 8. An fp32 model under bf16 autocast keeps 16."""
    from peftkit.hardware.estimate import estimate

    raw = {"model": {"name": str(tiny_bert), "dtype": "bfloat16"}, "task": {"head": "sentiment"},
           "method": {"name": "full"}, "train": {"precision": "bf16", "optim": "adamw_torch"}}
    half = estimate(resolved_recipe(raw), 32, ["negative", "positive"], device=CPU)
    assert half.trainable_params == half.total_params
    assert (half.weights, half.gradients, half.optimizer) == (2 * half.total_params, 2 * half.total_params,
                                                              4 * half.total_params)
    raw["model"]["dtype"] = "float32"
    full = estimate(resolved_recipe(raw), 32, ["negative", "positive"], device=CPU)
    assert (full.weights, full.gradients, full.optimizer) == (4 * full.total_params, 4 * full.total_params,
                                                              8 * full.total_params)


@pytest.mark.parametrize("method", ["qlora", "ia3"])
def test_the_estimate_counts_each_weight_in_the_dtype_a_quantized_run_holds_it(tiny_llama, method: str) -> None:
    """The weights term equals the bytes of the non-quantized parameters of the model a bf16 4-bit run builds:
    for QLoRA the base in bfloat16 (its preparation upcasts nothing), the adapters in float32; for (IA)³, whose
    quantized layers return float32, everything beside the 4-bit weights in float32."""
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.estimate import estimate
    from peftkit.model.loading import load_base_model
    from peftkit.registry import plugins

    raw = {"model": {"name": str(tiny_llama), "dtype": "bfloat16"}, "task": {"head": "causal_lm"},
           "method": {"name": method},
           "quantization": {"mode": "4bit", "quant_type": "nf4", "compute_dtype": "bfloat16"},
           "train": {"precision": "bf16", "optim": "adamw_torch", "gradient_checkpointing": False,
                     "lm_loss": "full", "tf32": False}}
    recipe = recipe_from_dict(raw)
    recipe.task.packing = False
    recipe.model.attn_implementation = "sdpa"
    head, method = plugins(recipe)
    base, head_modules = load_base_model(recipe.model, recipe.quantization, head, [])
    model = method.master_weights(method.apply(base, head_modules, head.task_type), "bf16")
    real = sum(p.numel() * p.element_size() for p in model.parameters() if p.__class__.__name__ != "Params4bit")
    predicted = estimate(recipe, 16, [], device=CPU)
    assert predicted.weights == real
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert predicted.gradients == 4 * trained and predicted.optimizer == 8 * trained


def test_evaluation_logits_are_counted(tiny_llama) -> None:
    """A causal LM's evaluation holds eval batch × sequence × vocabulary logits (bf16 under autocast) and, in the
    loss and response_nll, an fp32 copy and the fp32 log-softmax: ~12 GB at eval batch 8 × 1024 for Qwen2.5-7B."""
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.estimate import _config, estimate, eval_logit_bytes
    from peftkit.registry import build_head

    raw = {"model": {"name": str(tiny_llama)}, "task": {"head": "causal_lm"}, "method": {"name": "lora", "r": 4},
           "train": {"precision": "fp32", "optim": "adamw_torch", "gradient_checkpointing": False,
                     "eval_batch_size": 64}}
    recipe = resolved_recipe(raw)
    plain = estimate(recipe, 16, [], device=CPU)
    vocab = _config(recipe, build_head(recipe.task), []).vocab_size
    assert plain.eval_logits == 64 * 16 * vocab * 8  # fp32 logits and the log-softmax
    assert plain.evaluation > plain.eval_logits and plain.working_set == max(plain.activations, plain.evaluation)
    recipe.train.precision = "bf16"
    half = estimate(recipe, 16, [], device=CPU)
    assert half.eval_logits == 64 * 16 * vocab * 10  # bf16 logits, their fp32 copy, the log-softmax
    assert sum(value for _, value in half.terms()) == half.total
    seven = recipe_from_dict({"model": {"name": "Qwen/Qwen2.5-7B-Instruct", "dtype": "bfloat16"},
                              "task": {"head": "causal_lm"}, "method": {"name": "lora"},
                              "train": {"precision": "bf16", "eval_batch_size": 8}})
    config = _config(seven, build_head(seven.task), [])
    assert 12e9 < eval_logit_bytes(config, seven, 1024, causal=True) < 13e9


def test_chunked_loss_drops_the_full_vocabulary_training_logits(tiny_llama) -> None:
    """`train.lm_loss: full` holds the fp32 log-softmax and its gradient over every position (2 × 4 bytes per
    logit); chunked holds one chunk of logits at most, and the model's own output layer sees the last position."""
    from peftkit.hardware.estimate import CHUNK_TOKENS, _config, estimate, training_logit_bytes
    from peftkit.registry import build_head

    raw = {"model": {"name": str(tiny_llama)}, "task": {"head": "causal_lm"}, "method": {"name": "lora", "r": 4},
           "train": {"precision": "fp32", "gradient_checkpointing": False, "batch_size": 4, "lm_loss": "full"}}
    full_recipe = resolved_recipe(raw)
    chunked_recipe = resolved_recipe({**raw, "train": {**raw["train"], "lm_loss": "chunked"}})
    vocab = _config(full_recipe, build_head(full_recipe.task), []).vocab_size
    seq = 2048  # 4 × 2048 positions: two chunks' worth
    full, chunked = (estimate(r, seq, [], device=CPU) for r in (full_recipe, chunked_recipe))
    assert full.activations_from == chunked.activations_from == "traced"
    assert training_logit_bytes(full_recipe, 4 * seq, vocab) == 2 * 4 * seq * vocab * 4
    assert training_logit_bytes(chunked_recipe, 4 * seq, vocab) == CHUNK_TOKENS * vocab * 8 < 4 * seq * vocab * 8
    # gone: the model's fp32 logits (but the last position's), the full log-softmax and its gradient; added: a chunk
    logits, last = 4 * seq * vocab * 4, 4 * vocab * 4
    assert full.activations - chunked.activations == logits - last + 2 * logits - CHUNK_TOKENS * vocab * 8
    assert full.eval_logits == chunked.eval_logits  # evaluation keeps the full logits (response_nll reads them)


def test_lora_at_dropout_0_keeps_no_dropped_out_copy_and_the_estimate_counts_it_above_0(minilm_dir) -> None:
    """peft puts nn.Identity in place of dropout at p = 0, so no adapted layer saves a dropped-out copy of its input
    for the backward pass; at p > 0 each does, and the traced activations count it: one input-sized tensor per
    adapted layer (4 × 32 tokens × 384 in fp32 here) and its dropout mask."""
    from torch import nn

    from peftkit.hardware.auto import estimate_on
    from peftkit.hardware.estimate import meta_model

    labels = ["negative", "positive"]
    method = {"name": "lora", "r": 4, "target_modules": ["query", "value"]}
    figures = {}
    for dropout in (0.0, 0.1):
        recipe = tiny_estimate_recipe(minilm_dir, method={**method, "dropout": dropout})
        kinds = {type(m) for name, m in meta_model(recipe, labels).named_modules()
                 if name.endswith(".lora_dropout.default")}
        assert kinds == ({nn.Identity} if dropout == 0 else {nn.Dropout})
        figures[dropout] = estimate_on(recipe, CPU, sequence_length=32, labels=labels).activations
    adapted_layers = 2 * 6  # query and value in each of MiniLM's six layers
    inputs = adapted_layers * 4 * 32 * 384  # elements of the adapted layers' inputs
    assert 5 * inputs <= figures[0.1] - figures[0.0] < 6 * inputs  # the fp32 copy and dropout's one-byte mask
