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

import contextlib
import os


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(acc):
    """``acc`` with FSDP2 switched on where the launcher asked for FSDP and accelerate chose CPU data
    parallel instead (it selects FSDP for GPU backends only); unchanged otherwise."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if acc.distributed_type == DistributedType.FSDP:  # a later trainer in the same process
        _reset_wrap_policy(acc.state.fsdp_plugin)
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


def deepspeed_env_requested() -> bool:
    """Whether the launcher asked for DeepSpeed (``accelerate launch`` with ``distributed_type: DEEPSPEED``)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def enable_cpu_deepspeed(acc):
    """``acc`` with DeepSpeed switched on where the launcher asked for it and accelerate chose CPU data
    parallel instead (accelerate selects DeepSpeed for GPU backends only; DeepSpeed itself runs on
    CPU processes with its CPU accelerator and gloo).  The plugin's fields come from the launcher's
    ``ACCELERATE_DEEPSPEED_*`` environment; mixed precision is off on CPU."""
    from accelerate.utils import DistributedType

    if not deepspeed_env_requested() or acc.distributed_type != DistributedType.MULTI_CPU:
        return acc
    from accelerate.state import PartialState
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("no")
    plugin.select(_from_accelerator_state=True)
    acc.state.deepspeed_plugins = plugin
    acc.state.distributed_type = DistributedType.DEEPSPEED
    PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED
    return acc


def _reset_wrap_policy(plugin) -> None:
    """Undo what accelerate's ``prepare`` wrote into the (process-wide) FSDP plugin: the wrap classes
    of the last model prepared.  A later trainer's model (e.g. a policy with a separate critic after
    one with a value head) then gets its own ``_no_split_modules``, or the launcher's list."""
    import functools

    if isinstance(plugin.auto_wrap_policy, functools.partial):
        plugin.auto_wrap_policy = plugin.auto_wrap_policy.func
    env = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    plugin.transformer_cls_names_to_wrap = env.split(",") if env else None


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


@contextlib.contextmanager
def without_zero3_init():
    """transformers builds models partitioned (``deepspeed.zero.Init``, a collective) while a ZeRO-3
    config is registered; a plain copy built on the main process alone must not be."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:  # pragma: no cover
        yield
        return
    ref = getattr(hf_ds, "_hf_deepspeed_config_weak_ref", None)
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


def _plain_copy(module):
    """An unsharded module of the same architecture (fresh weights: they are overwritten)."""
    with without_zero3_init():
        return _plain_copy_inner(module)


def _plain_copy_inner(module):
    from transformers import PreTrainedModel

    from prefmatch.llm.models import policy_with_value_class

    if isinstance(module, policy_with_value_class()):
        return policy_with_value_class()(_plain_copy_inner(module.lm))
    from prefmatch.llm.critic import policy_with_critic_class

    if isinstance(module, policy_with_critic_class()):
        return policy_with_critic_class()(_plain_copy_inner(module.lm), _plain_copy_inner(module.critic))
    from peft import PeftModel, get_peft_model

    if isinstance(module, PeftModel):  # LoRA: the same adapters on a plain base
        import copy

        return get_peft_model(_plain_copy_inner(module.get_base_model()),
                              copy.deepcopy(module.peft_config[module.active_adapter]))
    if isinstance(module, PreTrainedModel):
        return _plain_class(module)._from_config(module.config, dtype=module.dtype)
    raise TypeError(f"cannot save a sharded {type(module).__name__}")


def savable_model(acc, model):
    """The model to ``save_pretrained`` on the main process: the unwrapped model, or under FSDP2 or
    ZeRO-3 an unsharded copy holding the full weights (gathered here: call on every process)."""
    unwrapped = acc.unwrap_model(model)
    if not partitioned_parameters(acc):
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


def is_zero3(acc) -> bool:
    """DeepSpeed ZeRO stage 3 (parameters partitioned: the unwrapped model holds none of them)."""
    return deepspeed_requested(acc) and acc.state.deepspeed_plugin.zero_stage == 3


def partitioned_parameters(acc) -> bool:
    """Whether the model's parameters are split across processes (FSDP2, ZeRO-3): saving gathers
    them and ``generate`` must step every process together."""
    return is_sharded(acc) or is_zero3(acc)


def engine_checkpoints(acc) -> bool:
    """Whether checkpoints hold per-process state (FSDP2: torch.distributed.checkpoint; DeepSpeed:
    the engine's own checkpoint) instead of one ``optimizer.pt`` written by the main process."""
    return is_sharded(acc) or deepspeed_requested(acc)


#: where a sharded checkpoint keeps its per-process state (FSDP2: DCP files; DeepSpeed: its tag)
SHARDED_DIR = "sharded"


def _raw_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)


def save_sharded_state(acc, model, optimizer, folder) -> None:
    """Model and optimizer state of every process into ``folder/sharded`` (a collective).

    FSDP2: ``torch.distributed.checkpoint`` of the sharded state dicts (each process writes its
    shards).  DeepSpeed: the engine's ``save_checkpoint`` (ZeRO partitions per process)."""
    from pathlib import Path

    folder = Path(folder)
    if deepspeed_requested(acc):
        model.save_checkpoint(str(folder), tag=SHARDED_DIR)
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, _raw_optimizer(optimizer))
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded_state(acc, model, optimizer, folder) -> None:
    """Restore what :func:`save_sharded_state` wrote (a collective; same engine and process count)."""
    from pathlib import Path

    folder = Path(folder)
    if not (folder / SHARDED_DIR).is_dir():
        raise ValueError(f"--resume: {folder} holds no sharded state ({SHARDED_DIR}/); it was written by an "
                         "unsharded run: resume it without FSDP/DeepSpeed")
    if deepspeed_requested(acc):
        load_path, _ = model.load_checkpoint(str(folder), tag=SHARDED_DIR, load_optimizer_states=True,
                                             load_lr_scheduler_states=False)
        if load_path is None:
            raise ValueError(f"--resume: {folder / SHARDED_DIR} is not a DeepSpeed checkpoint (written by an FSDP run?)")
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, _raw_optimizer(optimizer))
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    set_state_dict(model, _raw_optimizer(optimizer), model_state_dict=state["model"], optim_state_dict=state["optim"])


def unsharded_checkpoint_into_sharded_run(acc, folder) -> bool:
    from pathlib import Path

    return engine_checkpoints(acc) and not (Path(folder) / SHARDED_DIR).is_dir()


@contextlib.contextmanager
def shared_atomic_dir(acc, final):
    """:func:`prefmatch.llm.rundir.atomic_dir` for a folder every process writes into: the main
    process names the temporary folder (all processes get its name), and after everyone has
    written, renames it into place.  Yields the temporary folder on every process."""
    from pathlib import Path

    from prefmatch.llm import rundir

    final = Path(final)
    if acc.num_processes == 1:
        with rundir.atomic_dir(final) as tmp:
            yield tmp
        return
    import torch.distributed as dist

    name = [f".tmp-{final.name}-{os.getpid()}" if acc.is_main_process else None]
    dist.broadcast_object_list(name, src=0)
    tmp = final.parent / name[0]
    if acc.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir()
    acc.wait_for_everyone()
    ok = True
    try:
        yield tmp
    except BaseException:
        ok = False
        raise
    finally:
        acc.wait_for_everyone()
        if acc.is_main_process:
            if ok:
                rundir.publish_dir(tmp, final)
            else:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
