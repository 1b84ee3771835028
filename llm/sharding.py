"""Sharded data parallel (FSDP2) for the three training stages, on GPUs and on CPU processes.

``accelerate launch --config_file examples/accelerate/fsdp.yaml -m prefmatch train sft ...``
runs a stage with its parameters, gradients and optimizer state sharded across the processes by
``torch.distributed.fsdp.fully_shard`` (FSDP2), through accelerate's FSDP plugin
(``fsdp_version: 2``).  On GPUs accelerate selects FSDP itself.  On CPU processes (gloo) it
selects plain data parallel whatever the config says; :func:`enable_cpu_fsdp` turns the FSDP
plugin the launcher configured back on, so that the same config file runs sharded on a machine
without GPUs (the test suite does, with 2 processes).

:func:`savable_model` gathers the full weights of a sharded model (a collective: every process
calls it) into a plain, unsharded copy that ``save_pretrained`` writes as an ordinary HF model
directory.
"""
from __future__ import annotations

import os


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(acc):
    """``acc`` with FSDP2 switched on where the launcher asked for FSDP and accelerate chose CPU data
    parallel instead (it selects FSDP for GPU backends only); unchanged otherwise."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not fsdp_requested() or acc.distributed_type != DistributedType.MULTI_CPU:
        return acc
    plugin = FullyShardedDataParallelPlugin()  # fields from the launcher's FSDP_* environment
    if plugin.fsdp_version != 2:
        raise ValueError("fsdp_version: CPU processes are sharded with FSDP2 only; set fsdp_version: 2 "
                         "(examples/accelerate/fsdp.yaml)")
    from accelerate.state import PartialState

    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = DistributedType.FSDP
    # every later AcceleratorState() re-reads the process state: set it there too, as accelerate does
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return acc


def is_sharded(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def _plain_class(module):
    """The model's own class (FSDP2 swaps in a subclass ``FSDP<Class>``)."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    while issubclass(cls, FSDPModule) and cls.__bases__[-1] is not FSDPModule:
        cls = cls.__bases__[-1]
    return cls


def _plain_copy(module):
    """An unsharded module of the same architecture (fresh weights: they are overwritten)."""
    from transformers import PreTrainedModel

    from prefmatch.llm.models import policy_with_value_class

    if isinstance(module, policy_with_value_class()):
        return policy_with_value_class()(_plain_copy(module.lm))
    from peft import PeftModel, get_peft_model

    if isinstance(module, PeftModel):  # LoRA: the same adapters on a plain base
        import copy

        return get_peft_model(_plain_copy(module.get_base_model()),
                              copy.deepcopy(module.peft_config[module.active_adapter]))
    if isinstance(module, PreTrainedModel):
        return _plain_class(module)._from_config(module.config, dtype=module.dtype)
    raise TypeError(f"cannot save a sharded {type(module).__name__}")


def savable_model(acc, model):
    """The model to ``save_pretrained`` on the main process: the unwrapped model, or under FSDP an
    unsharded copy holding the full weights (gathered here: call on every process)."""
    unwrapped = acc.unwrap_model(model)
    if not is_sharded(acc):
        return unwrapped
    state = acc.get_state_dict(model)  # full tensors on the main process (a collective)
    if not acc.is_main_process:
        return None
    plain = _plain_copy(unwrapped)
    plain.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
    for attr in ("reward_normalization",):
        if hasattr(unwrapped, attr):
            setattr(plain, attr, getattr(unwrapped, attr))
    return plain


def local_tensor(t):
    """This process's shard of a sharded (DTensor) parameter; the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def initialize_root(model, device) -> None:
    """One no-grad forward of the whole sharded model, so that FSDP takes it as the root before any
    sub-module (``lm.generate``) runs on its own."""
    import torch

    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


def deepspeed_requested(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(acc, *, micro_batch: int, max_grad_norm: float) -> None:
    """Fill the DeepSpeed config's batch fields before ``acc.prepare(model, optimizer)`` (no-op
    without DeepSpeed).  accelerate fills ``auto`` values from a prepared DataLoader; the trainers
    prepare none, so without this ``train_micro_batch_size_per_gpu: auto`` is a ValueError at start.
    Gradient accumulation is done by the trainers (DeepSpeed sees one micro-batch per boundary
    they mark): ``gradient_accumulation_steps`` is 1 here; clipping is ``max_grad_norm``."""
    if not deepspeed_requested(acc):
        return
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = int(micro_batch)
    ds["gradient_accumulation_steps"] = 1
    ds["train_batch_size"] = int(micro_batch) * acc.num_processes
    ds["gradient_clipping"] = float(max_grad_norm) if max_grad_norm > 0 else 0.0
