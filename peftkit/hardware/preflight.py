"""The one pre-flight check: settings this machine cannot run are refused before anything loads, naming the key."""

from __future__ import annotations

import torch

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.hardware.device import flash_attention_usable, liger_installed
from peftkit.model.loading import random_init_config
from peftkit.model.params import config_at_hand


def check_machine(recipe: Recipe) -> None:
    """Refuse what this machine cannot run, naming the key (`auto` options are resolved to what it can first)."""
    cuda = torch.cuda.is_available()
    train = recipe.train
    if recipe.model.attn_implementation == "flash_attention_2" and not flash_attention_usable():
        raise PeftkitError("'model.attn_implementation': flash_attention_2 needs a CUDA GPU and the flash-attn "
                           "package; use auto or sdpa here")
    if train.precision == "fp16" and not cuda:
        raise PeftkitError("'train.precision': fp16 mixed precision needs a CUDA GPU; use fp32 or bf16 here")
    if train.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise PeftkitError("'train.precision': this GPU has no native bf16 (compute capability below 8.0: it "
                           "would emulate it, slowly); use fp16 or fp32")
    if train.optim.startswith("paged_") and not cuda:
        raise PeftkitError(
            f"'train.optim': {train.optim} pages optimizer state between GPU and CPU memory and needs a "
            "CUDA GPU; use adamw_bnb_8bit or adamw_torch here"
        )
    if train.tf32 is True and not (cuda and torch.cuda.get_device_capability() >= (8, 0)):
        raise PeftkitError("'train.tf32': TF32 needs a CUDA GPU of compute capability 8.0 or newer (Ampere on); "
                           "use auto or false here")
    if train.lm_loss == "liger" and not (cuda and liger_installed()):
        raise PeftkitError("'train.lm_loss': liger needs a CUDA GPU and the liger-kernel package; use auto or "
                           "chunked here")
    if recipe.model.random_init and config_at_hand(recipe.model):
        random_init_config(recipe.model)
    if recipe.distributed.cpu_offload and not cuda:
        raise PeftkitError("'distributed.cpu_offload' moves FSDP shards between GPU and CPU memory and needs CUDA "
                           "GPUs; here the weights are in CPU memory already, drop it")
