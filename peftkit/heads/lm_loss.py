"""The causal LM training loss without full-vocabulary fp32 logits (`train.lm_loss`: chunked, liger).

The model runs with ``logits_to_keep=1``, so its output layer sees one position; a forward hook on its decoder
keeps the last hidden states. Only the positions whose next token is labelled (the response) go through the
output layer, a chunk at a time; each chunk's logits are recomputed in the backward pass (activation
checkpointing), so at most one chunk of logits, in fp32, is alive at once. The loss equals transformers'
``ForCausalLMLoss``: summed next-token NLL divided by ``num_items_in_batch`` (the labelled tokens of the whole
accumulated batch) or, without it, by the batch's own labelled tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.checkpoint import checkpoint

from peftkit.heads.causal_lm import IGNORE

#: Labelled positions per chunk: 1024 × a 152k vocabulary is 0.6 GiB of fp32 logits. On an H200 (a Qwen2.5-0.5B
#: shaped model, LoRA, bf16, 8 × 1024 tokens) 1024 stepped as fast as 4096 with 5 GiB less at peak; 256 was slower.
CHUNK_TOKENS = 1024


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets: position t predicts labels[t + 1]; the last position predicts nothing."""
    return functional.pad(labels, (0, 1), value=IGNORE)[..., 1:]


def _chunk_nll(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module, softcap: float | None,
               label_smoothing: float) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return functional.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)


def chunked_nll(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, chunk_tokens: int = CHUNK_TOKENS,
                softcap: float | None = None, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token NLL, labelled token count) of ``hidden`` (batch × length × width) through the output
    layer ``head``, chunk by chunk, each chunk recomputed in the backward pass."""
    targets = shifted_targets(labels).reshape(-1)
    keep = targets != IGNORE
    rows, targets = hidden.reshape(-1, hidden.shape[-1])[keep], targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, rows[piece], targets[piece], head, softcap, label_smoothing,
                                       use_reentrant=False)
        else:
            total = total + _chunk_nll(rows[piece], targets[piece], head, softcap, label_smoothing)
    return total, keep.sum()


def liger_nll(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, softcap: float | None = None,
              label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token NLL, labelled token count) by liger-kernel's fused linear cross-entropy (CUDA)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    targets = shifted_targets(labels).reshape(-1)
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="sum",
                                            softcap=softcap)
    total = loss(head.weight, hidden.reshape(-1, hidden.shape[-1]), targets, head.bias)
    return total, (targets != IGNORE).sum()


class HiddenStates:
    """Keeps the last hidden states of a causal LM's decoder from every forward, through a hook registered once."""

    def __init__(self, model: nn.Module) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.head: nn.Module = base.get_output_embeddings()
        self.softcap: float | None = getattr(base.config, "final_logit_softcapping", None)
        self.last: torch.Tensor | None = None
        self.armed = False
        base.get_decoder().register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.armed:
            self.last = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """(last hidden states, outputs) of ``model`` on ``inputs``, its output layer run on the last position only."""
        self.armed = True
        try:
            outputs = model(**inputs, logits_to_keep=1)
        finally:
            self.armed = False
        hidden, self.last = self.last, None
        if hidden is None:
            raise RuntimeError("the decoder's forward hook saw no forward")
        return hidden, outputs


def lm_loss(states: HiddenStates, model: nn.Module, inputs: dict[str, Any], kind: str,
            num_items_in_batch: Any = None, label_smoothing: float = 0.0) -> tuple[torch.Tensor, Any]:
    """The training loss of ``inputs`` (labels included) and the model's outputs (last position's logits only)."""
    labels = inputs["labels"]
    hidden, outputs = states.forward(model, {k: v for k, v in inputs.items() if k != "labels"})
    hidden = hidden[:, -labels.shape[1]:]  # prompt-learning methods put virtual tokens in front of the input
    if kind == "liger" and type(states.head) is nn.Linear:
        total, count = liger_nll(hidden, states.head, labels, states.softcap, label_smoothing)
    else:  # an output layer an adapter wraps (LoRA on lm_head, modules_to_save) goes through its own forward
        total, count = chunked_nll(hidden, states.head, labels, softcap=states.softcap,
                                   label_smoothing=label_smoothing)
    denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
    if torch.is_tensor(denominator):
        denominator = denominator.to(total.device)
    return total / denominator, outputs
