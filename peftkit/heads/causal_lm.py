"""Causal LM instruction tuning: prompt → response, loss on the response tokens only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from peftkit.config.schema import HeadConfig, option
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head, column_values, logits_only, require_columns, tokenizing_label
from peftkit.registry import HEADS

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label id the loss skips (prompt tokens, padding)


class CausalLMConfig(HeadConfig):
    head: str = option("causal_lm", "task head (`peftkit heads` lists them)")
    prompt_column: str = option("prompt", "column holding the prompt / instruction (causal_lm)")
    response_column: str = option("response", "column holding the expected response (causal_lm)")
    instruction: str = option("", "text put before every prompt, e.g. the task in one sentence (causal_lm)")
    template: Literal["chat", "plain"] = option(
        "chat", "chat: the tokenizer's chat template; plain: task.plain_format around the prompt"
    )
    plain_format: str = option(
        "### Instruction:\n{prompt}\n\n### Response:\n", "prompt layout of template: plain ({prompt} is replaced)"
    )
    packing: bool | Literal["auto"] = option(
        "auto", "padding-free packing: each batch is one sequence without padding, positions restarting and "
        "attention kept within each example (any attention kernel; sdpa and eager mask one long row); "
        "auto = on with flash_attention_2 unless the method prepends virtual tokens or data.padding is fixed"
    )
    max_new_tokens: int = option(32, "longest generated response in `peftkit predict` and in test samples", ge=1)
    test_samples: int = option(3, "test prompts answered by generation after training, kept in metrics.json", ge=0)


@HEADS.register("causal_lm")
class CausalLMHead(Head):
    description = "instruction tuning of a decoder LM: loss on response tokens; eval loss + perplexity"
    kind = "causal_lm"
    main_metric = "token_loss"
    label_field = "response"
    token_level_loss = True
    config: CausalLMConfig

    def read_labels(self, dataset: Dataset, column: str) -> list[str]:
        return []

    def standardize(self, dataset: Dataset, data_cfg: Any, split: str) -> Dataset:
        columns = {"prompt": self.config.prompt_column, "response": self.config.response_column}
        require_columns(dataset, split, ((column, f"task.{key}_column") for key, column in columns.items()))
        values = {key: column_values(dataset, column) for key, column in columns.items()}
        for key, column in columns.items():
            for row, value in enumerate(values[key], start=1):
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise PeftkitError(f"data ({split} split) row {row}: empty or missing {key} in column '{column}'")
        from datasets import Dataset

        return Dataset.from_dict({k: [str(v) for v in vals] for k, vals in values.items()})

    def format_prompt(self, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
        """The prompt as the model sees it, up to where the response starts."""
        text = f"{self.config.instruction}\n\n{prompt}" if self.config.instruction else prompt
        if self.config.template == "plain":
            return self.config.plain_format.replace("{prompt}", text)
        if not tokenizer.chat_template:
            raise PeftkitError(
                f"task.template: chat, but the tokenizer of {tokenizer.name_or_path} has no chat template; "
                "use task.template: plain"
            )
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def encode_pair(self, tokenizer: PreTrainedTokenizerBase, prompt: str, response: str,
                    max_length: int) -> dict[str, list[int]]:
        """Token ids of prompt + response + eos; labels are -100 on the prompt.

        Too long: the prompt loses its start first (its end holds the response cue), the response keeps at
        least half of ``max_length``.
        """
        prompt_ids = tokenizer(self.format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            response_ids = [*response_ids, tokenizer.eos_token_id]
        response_ids = response_ids[: max(max_length // 2, max_length - len(prompt_ids))]
        keep = max_length - len(response_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - keep:] if 0 < keep < len(prompt_ids) else prompt_ids[:keep]
        return {
            "input_ids": prompt_ids + response_ids,
            "labels": [IGNORE] * len(prompt_ids) + response_ids,
        }

    def tokenize(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 label2id: dict[str, int]) -> Dataset:
        def encode(batch: dict[str, list]) -> dict[str, list]:
            pairs = [self.encode_pair(tokenizer, p, r, max_length)
                     for p, r in zip(batch["prompt"], batch["response"], strict=True)]
            return {key: [pair[key] for pair in pairs] for key in ("input_ids", "labels")}

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=tokenizing_label())

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable:
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        if self.config.packing is True:
            return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {}

    def trainer_kwargs(self) -> dict[str, Any]:
        # Reduce each batch's logits to (summed response-token NLL, token count) so that evaluation never
        # holds examples × length × vocabulary logits.
        return {"preprocess_logits_for_metrics": response_nll}

    def compute_metrics(self, label_names: list[str]) -> Callable[[Any], dict[str, Any]]:
        import numpy as np

        def metrics(prediction: Any) -> dict[str, Any]:
            sums = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2).sum(axis=0)
            token_loss = float(sums[0] / max(sums[1], 1.0))
            return {"token_loss": token_loss, "perplexity": math.exp(token_loss), "tokens": int(sums[1])}

        return metrics

    def prompt_inputs(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> Any:
        """Formatted prompts for generation, padded and truncated on the left (the end holds the response cue)."""
        sides = tokenizer.padding_side, tokenizer.truncation_side
        tokenizer.padding_side = tokenizer.truncation_side = "left"
        try:
            return tokenizer([self.format_prompt(tokenizer, text) for text in texts], add_special_tokens=False,
                             truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side, tokenizer.truncation_side = sides

    def predict_batch(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                      label_names: list[str], max_length: int, device: torch.device) -> list[dict[str, Any]]:
        inputs = self.prompt_inputs(tokenizer, texts, max_length).to(device)
        output = model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
        generated = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [{"prompt": p, "response": g.strip()} for p, g in zip(texts, generated, strict=True)]

    def samples(self, model: Any, tokenizer: PreTrainedTokenizerBase, test: Dataset,
                max_length: int) -> dict[str, Any]:
        rows = test.select(range(min(self.config.test_samples, len(test))))
        if len(rows) == 0:
            return {}
        generated = self.predict(model, tokenizer, rows["prompt"], [], len(rows), max_length)
        return {"samples": [{**g, "reference": ref} for g, ref in zip(generated, rows["response"], strict=True)]}

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return f"{prediction['prompt']}\t→ {' '.join(prediction['response'].split())}"


def response_nll(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """Per row: summed next-token NLL over labelled (response) tokens and their count, shape (rows, 2)."""
    import torch

    # prompt-learning methods put virtual tokens in front of the input
    logits = logits_only(logits)[:, -labels.shape[1]:]
    shifted_logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE
    nll = torch.nn.functional.cross_entropy(
        shifted_logits.transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none"
    )
    return torch.stack([(nll * mask).sum(dim=1), mask.sum(dim=1).to(nll.dtype)], dim=1)
