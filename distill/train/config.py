"""Training settings: the recipe's `train` section, `student.lora`, and what one run needs.

`TrainConfig` is what a user writes under `train:`; `LoraSettings` under `student.lora:`
(null there means a full fine-tune). `TrainSpec` is one concrete training job: the
runner builds it, and it is JSON so that `accelerate launch` can hand it to
`python -m distill.train.sft spec.json` in fresh processes. `TrainResult` is what a job
reports back, and the content of `<output_dir>/train_log.json`.

The methods (`train.method`) are the names in `distill.registry.TRAINERS`: each training
module registers its function there, so a new method is one new module.

TRL's own arguments are never re-declared here: `train.args` passes through untouched to
`trl.SFTConfig` (method sft), `trl.DPOConfig` (dpo, and the DPO step of sft_then_dpo) or
`trl.DistillationConfig` (on_policy, and the on-policy step of sft_then_on_policy), after
the few defaults in `sft_defaults` / `dpo_defaults` / `distillation_defaults` fill keys the
user left out. The SFT step of a two-step method (`TWO_STEP`) takes `train.sft_args`.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from distill.registry import TRAINERS
from distill.settings import Strict, resolve_path

# Keys of `train.args` that distill itself decides: where the trainer writes.
RESERVED_ARGS = {"output_dir": "the training stage's own directory is used"}


class LoraSettings(BaseModel):
    """A PEFT LoRA adapter on the student (`student.lora` in a recipe)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32, gt=0, description="Scaling numerator: updates scale by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' (every linear "
        "layer but the output head) or a list of module names such as [q_proj, v_proj].")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full beside the adapter, e.g. [lm_head].")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")

    def to_peft(self):
        """The equivalent `peft.LoraConfig` for a causal language model."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias=self.bias,
            modules_to_save=self.modules_to_save,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            task_type="CAUSAL_LM",
        )


def sft_defaults(*, full_finetune: bool) -> dict[str, Any]:
    """Defaults for `SFTConfig` that distill uses only for keys a recipe leaves unset.

    Learning rates follow common practice for instruction tuning (2e-4 with LoRA, 2e-5
    for all weights, as in Alpaca); the cosine schedule, 3 % warm-up and 3 epochs are
    Alpaca's. The loss covers the assistant's tokens only (Alpaca masks the prompt).
    Every step's loss is logged so that the report can plot it; checkpoints are off
    because the stage saves the adapter and the merged model itself.
    """
    return {
        "learning_rate": 2e-5 if full_finetune else 2e-4,
        "num_train_epochs": 3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "assistant_only_loss": True,
        # Under DDP: every LoRA / decoder parameter is used in each step, and searching
        # for unused ones costs an extra pass over the graph.
        "ddp_find_unused_parameters": False,
    }


def resolve_sft_args(args: dict[str, Any], *, full_finetune: bool, seed: int,
                     quiet: bool = False, global_batch_size: int | None = None
                     ) -> dict[str, Any]:
    """`train.args` with distill's defaults filled in where the user set nothing.

    Hardware-dependent defaults are decided here, in the process that trains: bf16 is
    TRL's default only where the device supports it, so that the same recipe also runs
    on a CPU; and with a `global_batch_size`, gradient accumulation follows the number of
    processes training (`with_global_batch`).
    """
    resolved = {**sft_defaults(full_finetune=full_finetune), "seed": seed,
                "disable_tqdm": quiet, **args}
    resolved = with_global_batch(resolved, global_batch_size, training_processes(), "sft")
    return _device_defaults(resolved, args)


def distillation_defaults(*, full_finetune: bool) -> dict[str, Any]:
    """Defaults for `DistillationConfig` (method on_policy) for keys a recipe leaves unset.

    TRL's own defaults (learning rate 1e-6, gradient checkpointing, bf16) are made for a
    full fine-tune of a large student on a GPU; with a LoRA adapter the learning rate is
    SFT's 2e-4 (Thinking Machines' on-policy distillation with LoRA used 10x the full
    fine-tuning rate), one epoch over the prompts. `beta` stays TRL's 1.0 (reverse KL, the
    on-policy distillation objective of Agarwal et al. and Qwen3). Logging and checkpoints
    as for SFT.
    """
    return {
        "learning_rate": 2e-5 if full_finetune else 2e-4,
        "num_train_epochs": 1,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "ddp_find_unused_parameters": False,
    }


def resolve_distillation_args(args: dict[str, Any], *, full_finetune: bool, seed: int,
                              quiet: bool = False, global_batch_size: int | None = None
                              ) -> dict[str, Any]:
    """`train.args` for `DistillationConfig`, with distill's defaults where the user set nothing.

    Besides SFT's device defaults: gradient checkpointing (TRL's default) stays on only
    on a GPU, where it saves memory; on a CPU it only costs time (10 % of an on-policy
    step of the microworld student, 3-4x for SFT) and gives the same weights.
    """
    resolved = {**distillation_defaults(full_finetune=full_finetune), "seed": seed,
                "disable_tqdm": quiet, **args}
    resolved = with_global_batch(resolved, global_batch_size, training_processes(),
                                 "distillation")
    if "gradient_checkpointing" not in args and not _cuda_available():
        resolved["gradient_checkpointing"] = False
    return _device_defaults(resolved, args)


def dpo_defaults(*, full_finetune: bool) -> dict[str, Any]:
    """Defaults for `DPOConfig` that distill uses only for keys a recipe leaves unset.

    Zephyr's DPO recipe (Tunstall et al. 2023; alignment-handbook): learning rate 5e-7
    for all weights and 5e-6 with LoRA, one epoch, cosine schedule, 10 % warm-up. `beta`
    stays TRL's default, 0.1 (Zephyr later used 0.01). Logging and checkpoints as for SFT.
    """
    return {
        "learning_rate": 5e-7 if full_finetune else 5e-6,
        "num_train_epochs": 1,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "ddp_find_unused_parameters": False,
    }


def resolve_dpo_args(args: dict[str, Any], *, full_finetune: bool, seed: int,
                     quiet: bool = False, global_batch_size: int | None = None
                     ) -> dict[str, Any]:
    """`train.args` for `DPOConfig`, with distill's defaults where the user set nothing."""
    resolved = {**dpo_defaults(full_finetune=full_finetune), "seed": seed,
                "disable_tqdm": quiet, **args}
    resolved = with_global_batch(resolved, global_batch_size, training_processes(), "dpo")
    return _device_defaults(resolved, args)


# -- the global batch ----------------------------------------------------------------------

def training_processes() -> int:
    """How many processes train together: WORLD_SIZE under `accelerate launch`, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(args: dict[str, Any], trainer: str) -> int:
    """`per_device_train_batch_size` as TRL will read it: the recipe's, else its default."""
    if "per_device_train_batch_size" in args:
        return int(args["per_device_train_batch_size"])
    return int(_config_defaults(trainer)["per_device_train_batch_size"])


def accumulation_steps(global_batch_size: int, per_device: int, processes: int) -> int:
    """The gradient accumulation that makes each optimizer step see `global_batch_size`.

    Raises:
        ValueError: the global batch is not a whole number of per-device batches on every
            process (a rounded accumulation would silently train with another batch).
    """
    per_step = per_device * processes
    if global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size {global_batch_size} is not a multiple of "
            f"per_device_train_batch_size {per_device} x {processes} process(es) = {per_step}; "
            "choose a global batch (or a per-device batch) that divides evenly, e.g. powers "
            "of two on 1, 2, 4 or 8 GPUs")
    return global_batch_size // per_step


def with_global_batch(resolved: dict[str, Any], global_batch_size: int | None,
                      processes: int, trainer: str) -> dict[str, Any]:
    """`resolved` with the gradient accumulation that `global_batch_size` asks for.

    The effective batch is per-device batch x processes x accumulation, so a fixed
    accumulation in the recipe would train a different model on 8 GPUs than on one; the
    global batch stays what the recipe says, whatever the GPU count.
    """
    if global_batch_size is None:
        return resolved
    check_global_batch_args(global_batch_size, resolved, trainer)
    steps = accumulation_steps(global_batch_size, per_device_batch(resolved, trainer), processes)
    return {**resolved, "gradient_accumulation_steps": steps}


def check_global_batch(spec: TrainSpec, processes: int) -> None:
    """Check, before launching, that `processes` can train the spec's global batch.

    Raises:
        ValueError: as `accumulation_steps`, for the spec's args (and sft_args).
    """
    steps = [(spec.args, ARGS_TRAINER[spec.method])]
    if spec.method in TWO_STEP:
        steps.append((spec.sft_args, "sft"))
    for args, trainer in steps:
        if spec.global_batch_size is not None:
            accumulation_steps(spec.global_batch_size, per_device_batch(args, trainer),
                               processes)


def check_global_batch_args(global_batch_size: int, args: dict[str, Any], trainer: str,
                            where: str = "train.args") -> None:
    """Refuse TRL arguments that would change the batch that `global_batch_size` fixes.

    Raises:
        ValueError: gradient_accumulation_steps or auto_find_batch_size is set, or the global
            batch is not a multiple of the per-device batch.
    """
    if "gradient_accumulation_steps" in args:
        raise ValueError(f"{where}.gradient_accumulation_steps is set too: global_batch_size "
                         "decides the accumulation from the number of processes; remove one "
                         "of the two")
    if args.get("auto_find_batch_size"):
        raise ValueError(f"{where}.auto_find_batch_size halves the per-device batch on running "
                         "out of memory, which would change the global batch; remove it")
    per_device = per_device_batch(args, trainer)
    if global_batch_size % per_device:
        raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of "
                         f"{where}.per_device_train_batch_size {per_device}")


def _device_defaults(resolved: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """No bf16 where the device lacks it, no pinned memory without CUDA, unless asked."""
    if "bf16" not in args and "fp16" not in args and not _bf16_device_available():
        resolved["bf16"] = False
    if "dataloader_pin_memory" not in args and not _cuda_available():
        resolved["dataloader_pin_memory"] = False
    return resolved


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16_device_available() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available

    return bool(is_torch_bf16_gpu_available())


def check_sft_args(args: dict[str, Any], *, prefix: str = "train.args") -> None:
    """Check `train.args` against `trl.SFTConfig` so that a wrong key or value fails early.

    Keys are checked against SFTConfig's fields, values by `check_sft_values`.

    Raises:
        ValueError: naming the offending key (`train.args.<key>`) and what is wrong.
    """
    for key in args:
        try:
            check_arg_name(key)
        except ValueError as error:
            raise ValueError(f"{prefix}.{key}: {error}") from None
    try:
        check_sft_values(args)
    except ValueError as error:
        raise ValueError(f"{prefix}: {error}") from None


def check_sft_values(args: dict[str, Any]) -> None:
    """Construct `trl.SFTConfig` from `args` (plus defaults); its complaint becomes ours.

    Skipped in one rank of several: constructing TrainingArguments sets up devices and
    process groups, which belongs to the trainer there. Packing settings under which the
    examples would attend to one another are refused first (`check_examples_apart`).
    """
    check_examples_apart(args)
    _check_values(args, "sft")


# -- packing: every example must see only itself -------------------------------------------
# TRL 1.16's SFTTrainer packs in two ways. `padding_free` (which `packing` with strategy
# bfd or bfd_split turns on) flattens a batch into one row whose position ids restart at
# each example; what keeps the examples apart is then the attention: flash attention
# kernels split the row at the restarts (cu_seq_lens), and transformers' own masks (sdpa,
# eager, flex_attention) split it too, because SFTTrainer.compute_loss passes
# use_cache=False and transformers 5 then builds a per-example causal mask from the
# position ids (masking_utils.find_packed_sequence_indices). Measured on the microworld
# student with sdpa: the loss of every step is that of unpacked training (to 1e-5). (A
# forward outside TRL with the checkpoint's use_cache true skips that mask and does mix
# the examples, likely the 9.965 against 10.264; TRL's training never runs one.)
# Strategy `wrapped` instead concatenates the examples and cuts rows with an all-ones
# attention mask: each token attends to the examples before it in its row, whatever the
# kernel: TRL's loss on the same 168 trained tokens of 16 chats, one row, microworld
# student, sdpa: 10.917 wrapped, 10.741 unpacked and bfd (tests/train/test_packing.py).
# Attention implementations that keep a padding-free row's examples apart: the flash
# kernels (transformers' own test: "flash" in the name) and these mask-building ones.
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")
PACKING_STRATEGY_DEFAULT = "bfd"


def check_examples_apart(args: dict[str, Any]) -> None:
    """Refuse SFT arguments under which one training example attends to another.

    Raises:
        ValueError: naming the argument (`packing_strategy`, `padding_free`, `packing`) and
            why: wrapped packing; or padding-free batches under an attention implementation
            not known to keep the examples apart (one that is neither flash attention nor
            sdpa / eager / flex_attention, or a model's own remote code).
    """
    packing = bool(args.get("packing"))
    strategy = args.get("packing_strategy", PACKING_STRATEGY_DEFAULT)
    if packing and strategy == "wrapped":
        raise ValueError(
            "packing_strategy wrapped concatenates the examples and cuts the stream into rows "
            "with one attention mask each, so a token attends to the other examples in its "
            "row and examples are cut mid-conversation; use packing_strategy bfd (TRL's "
            "default), which keeps each example whole and apart")
    padding_free = bool(args.get("padding_free")) or (packing and strategy in ("bfd",
                                                                                "bfd_split"))
    if not padding_free:
        return
    asked = ("padding_free" if args.get("padding_free")
             else f"packing (strategy {strategy}, which TRL trains padding-free)")
    kwargs = args.get("model_init_kwargs") or {}
    if isinstance(kwargs, str):  # TRL also takes the JSON text of the dict
        kwargs = json.loads(kwargs)
    attention = attention_implementation(args)
    if attention is not None and "flash" in attention:
        return
    if attention is not None and attention not in MASKED_ATTENTION:
        raise ValueError(
            f"{asked} puts a batch's examples into one row, and model_init_kwargs."
            f"attn_implementation {attention!r} is not known to keep them apart; use a flash "
            "attention kernel (flash_attention_2, flash_attention_3, "
            "kernels-community/flash-attn2, ...) or one of " + ", ".join(MASKED_ATTENTION))
    if kwargs.get("trust_remote_code"):
        raise ValueError(
            f"{asked} puts a batch's examples into one row, which {attention or 'sdpa'} keeps "
            "apart only through transformers' own masks, and a model with "
            "trust_remote_code may build its own; set model_init_kwargs.attn_implementation "
            "to a flash attention kernel (flash_attention_2, ...), or drop " + (
                "padding_free" if args.get("padding_free") else "packing"))


# -- packing by default --------------------------------------------------------------------
# Under a flash attention kernel SFT packs by default (strategy bfd: whole examples in rows
# of up to max_length tokens, trained padding-free): exact, since the kernel splits a row at
# the position-id restarts, and the batches carry no padding. Under sdpa / eager /
# flex_attention padding-free is exact too (tests/train/test_packing_exact.py), but sdpa and
# eager then attend through a dense mask over the whole packed row, so the default stays
# TRL's padded batches there (scripts/bench_train.py measures both). Packing makes other
# batches (per_device_train_batch_size counts rows, not examples), so the train stage's
# fingerprint sees the args with the default applied (`TrainConfig.fingerprint_settings`).

def attention_implementation(args: dict[str, Any]) -> str | None:
    """`model_init_kwargs.attn_implementation` of SFT arguments (None: transformers' sdpa)."""
    kwargs = args.get("model_init_kwargs") or {}
    if isinstance(kwargs, str):  # TRL also takes the JSON text of the dict
        kwargs = json.loads(kwargs)
    return kwargs.get("attn_implementation")


def with_packing_default(args: dict[str, Any]) -> dict[str, Any]:
    """`args` with `packing: true` where the recipe leaves packing unset under flash attention.

    A recipe that sets `packing` or `padding_free` (either value), or strategy `wrapped`,
    keeps what it says; so does any attention implementation other than a flash kernel.
    """
    if "packing" in args or "padding_free" in args:
        return args
    if args.get("packing_strategy", PACKING_STRATEGY_DEFAULT) == "wrapped":
        return args
    attention = attention_implementation(args)
    if attention is None or "flash" not in attention:
        return args
    return {**args, "packing": True}


def packing_mode(args: dict[str, Any]) -> str:
    """How SFT batches the examples under resolved `args`: padded, padding-free or packed."""
    if args.get("packing"):
        return f"packed ({args.get('packing_strategy', PACKING_STRATEGY_DEFAULT)}, padding-free)"
    return "padding-free" if args.get("padding_free") else "padded"


def _check_values(args: dict[str, Any], trainer: str) -> None:
    if _in_multiprocess_run():
        return
    import trl

    resolve = {"sft": resolve_sft_args, "dpo": resolve_dpo_args,
               "distillation": resolve_distillation_args}[trainer]
    config_class = getattr(trl, TRL_CONFIGS[trainer])
    checked = resolve(args, full_finetune=False, seed=0)
    # Validation may run where the recipe will not train (a laptop checking a GPU recipe):
    # TrainingArguments refuses bf16 without a bf16 GPU unless told the run is on CPU.
    if "use_cpu" not in checked and not _bf16_device_available():
        checked["use_cpu"] = True
    with tempfile.TemporaryDirectory(prefix="distill-trlconfig-") as tmp, _accelerate_state_kept():
        try:
            config_class(output_dir=tmp, **checked)
        except (TypeError, ValueError) as error:
            raise ValueError(f"trl.{config_class.__name__} rejects these arguments: "
                             f"{error}") from None


# trainer -> the TRL config class its `train.args` go to
TRL_CONFIGS = {"sft": "SFTConfig", "dpo": "DPOConfig", "distillation": "DistillationConfig"}
# train.method -> the trainer whose config its `train.args` go to (kd trains with SFT's
# arguments; a two-step method's `sft_args` go to SFTConfig)
ARGS_TRAINER = {"sft": "sft", "kd": "sft", "dpo": "dpo", "sft_then_dpo": "dpo",
                "on_policy": "distillation", "sft_then_on_policy": "distillation"}
# Methods that train SFT on the records first (`train.sft_args`, into `sft/`), then their
# second step from the merged SFT model.
TWO_STEP = frozenset({"sft_then_dpo", "sft_then_on_policy"})


def coerce_numbers(args: dict[str, Any], trainer: str) -> dict[str, Any]:
    """Read numbers that YAML left as strings ("1e-3": YAML 1.1 wants "1.0e-3") as numbers.

    TrainingArguments does not check types, so `learning_rate: 1e-3` would otherwise reach
    the optimizer as a string and fail only once training starts.

    Raises:
        ValueError: a numeric argument whose value is not a number.
    """
    import dataclasses
    import typing

    import trl

    def numeric_type(declared: Any) -> type | None:
        options = typing.get_args(declared) or (declared,)  # `int | None` -> (int, None)
        return next((t for t in (int, float) if t in options), None)

    types = {f.name: f.type for f in dataclasses.fields(getattr(trl, TRL_CONFIGS[trainer]))}
    coerced = dict(args)
    for key, value in args.items():
        number = numeric_type(types.get(key))
        if number is None or not isinstance(value, str):
            continue
        try:
            coerced[key] = int(value) if number is int else float(value)
        except ValueError:
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    return coerced


def check_arg_name(key: str, trainer: str = "sft") -> str:
    """Accept `key` if it is an argument of the trainer's TRL config the recipe may set."""
    if key in RESERVED_ARGS:
        raise ValueError(f"set by distill ({RESERVED_ARGS[key]}); remove it from the recipe")
    names = _config_fields(trainer)
    if key not in names:
        close = difflib.get_close_matches(key, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"not an argument of trl.{TRL_CONFIGS[trainer]}{hint}")
    return key


def _check_train_arg_name(key: str, info: ValidationInfo) -> str:
    # `args` go to DPOConfig when the method ends with DPO; `sft_args` always to SFTConfig
    method = info.data.get("method", "sft")
    return check_arg_name(key, ARGS_TRAINER[method] if info.field_name == "args" else "sft")


@functools.cache
def _config_defaults(trainer: str) -> dict[str, Any]:
    import dataclasses

    import trl

    return {f.name: f.default for f in dataclasses.fields(getattr(trl, TRL_CONFIGS[trainer]))
            if f.default is not dataclasses.MISSING}


@functools.cache
def _config_fields(trainer: str) -> frozenset[str]:
    import dataclasses

    import trl

    return frozenset(f.name for f in dataclasses.fields(getattr(trl, TRL_CONFIGS[trainer]))
                     if f.init)


def _in_multiprocess_run() -> bool:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    import torch.distributed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextlib.contextmanager
def _accelerate_state_kept():
    """Undo the accelerate state that constructing TrainingArguments resets and rebuilds."""
    from accelerate.state import AcceleratorState, PartialState

    saved = {cls: dict(cls._shared_state) for cls in (PartialState, AcceleratorState)}
    try:
        yield
    finally:
        for cls, state in saved.items():
            cls._shared_state.clear()
            cls._shared_state.update(state)


# A `train.args` key: a wrong one is reported at `train.args.<key>`.
SFTArgName = Annotated[str, AfterValidator(check_arg_name)]
TrainArgName = Annotated[str, AfterValidator(_check_train_arg_name)]


# A training method: a name in distill.registry.TRAINERS (listed in the JSON schema).
TrainMethod = TRAINERS.name_type()


class KDSettings(Strict):
    """Logit distillation from the teacher's top-k log-probabilities (`train.kd`).

    The teacher's top-k are kept while it answers (the generation pass), so training needs
    no teacher in memory. The divergence is over the k tokens plus one bucket for the mass
    left outside them (`tail: bucket`), or over the k tokens renormalised (`renormalize`).
    """

    top_k: int = Field(20, ge=1, le=100, description="Log-probabilities kept per generated "
                       "token (vLLM serves at most its max_logprobs, 20 by default).")
    beta: float = Field(0.0, ge=0.0, le=1.0, description="Generalised Jensen-Shannon "
                        "divergence, as TRL's beta: 0 forward KL(teacher || student), 1 "
                        "reverse KL, 0.5 the symmetric JSD.")
    ce_weight: float = Field(0.0, ge=0.0, le=1.0, description="Share of cross-entropy on "
                             "the teacher's sampled tokens in the loss: (1 - w) * divergence "
                             "+ w * cross-entropy.")
    tail: Literal["bucket", "renormalize"] = Field(
        "bucket", description="The teacher's mass outside its top k: one extra class "
        "against the student's mass outside the same k (bucket), or dropped, both "
        "distributions renormalised over the k tokens (renormalize).")


class LocalLauncher(Strict):
    """Training on this node: `accelerate launch` as a subprocess of the runner."""

    kind: Literal["local"] = "local"


class RayLauncher(Strict):
    """Training on several nodes of a running Ray cluster (distill.train.ray_launch).

    One `accelerate launch` per node, each one machine of a multi-node launch; the run
    directory must be on storage every node sees.
    """

    kind: Literal["ray"] = "ray"
    nodes: int = Field(2, ge=1, description="How many nodes train together, one "
                       "`accelerate launch` (one machine rank) on each.")
    address: str | None = Field(
        None, description="The Ray cluster to connect to (host:6379, ray://host:10001, "
        "auto); null: the RAY_ADDRESS environment variable.")
    processes_per_node: int | None = Field(
        None, ge=1, description="Training processes on each node; null: the GPUs of the "
        "smallest GPU node (1 on a CPU cluster). --num_processes is nodes times this.")


# `train.launcher`: where the training processes start.
TrainLauncher = Annotated[LocalLauncher | RayLauncher, Field(discriminator="kind")]


# TRL / transformers arguments that only say where training logs (distill.tracking): kept
# out of the train stage's fingerprint like the OPERATIONAL fields.
TRACKING_ARGS = frozenset({"report_to", "run_name"})


class TrainConfig(Strict):
    """The recipe's `train` section: how the student is trained."""

    # Where training runs changes its speed, not what it learns; the two things it does
    # change (mixed precision, the process count) enter through `launch.training_shape`.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"accelerate_config", "launcher"})

    method: TrainMethod = Field(
        "sft", description="sft: supervised fine-tuning on the kept examples (TRL "
        "SFTTrainer; a preference pair trains on its chosen answer); dpo: TRL DPOTrainer on "
        "preference pairs (generate.kind: preference), reference = the student with its "
        "adapter disabled; sft_then_dpo: SFT on the chosen answers, then DPO from the SFT "
        "model (Zephyr's two steps); kd: logit distillation from the teacher's top-k "
        "log-probabilities kept while it wrote the data (train.kd); on_policy: the student "
        "samples answers to the kept prompts and the teacher scores them token by token "
        "(TRL DistillationTrainer; the teacher must load here and share the student's "
        "tokenizer); sft_then_on_policy: SFT on the teacher's answers, then on_policy from "
        "the SFT model (Thinking Machines' and Qwen3's recipe: a raw student's samples "
        "run to the length cap).")
    accelerate_config: str | None = Field(
        None, description="accelerate config YAML (see recipes/accelerate/) that `distill run` "
        "launches training with; null trains inside the runner's process.")
    launcher: TrainLauncher = Field(
        default_factory=LocalLauncher, description="Where the training processes start: "
        "{kind: local} on this node; {kind: ray, nodes: 2} on that many nodes of a Ray "
        "cluster (needs a multi-process accelerate_config and a shared run directory).")
    args: dict[TrainArgName, Any] = Field(
        default_factory=dict, description="Passed untouched to trl.SFTConfig (learning_rate, "
        "num_train_epochs, per_device_train_batch_size, max_length, ...); distill fills "
        "learning_rate 2e-4 (LoRA) / 2e-5 (full), cosine schedule, warmup 0.03, 3 epochs, "
        "assistant-only loss and per-step logging where unset, and packing true (bfd, "
        "padding-free: rows of up to max_length tokens, so per_device_train_batch_size "
        "counts rows) when model_init_kwargs.attn_implementation is a flash attention kernel "
        "and neither packing nor padding_free is set. Refused, because examples "
        "would attend to one another: packing_strategy wrapped; padding_free or packing "
        "(bfd, padding-free) unless model_init_kwargs.attn_implementation is a flash "
        "attention kernel or sdpa / eager / flex_attention (the default is sdpa), and "
        "without flash attention under trust_remote_code. With dpo and sft_then_dpo "
        "they go to trl.DPOConfig (beta, loss_type, max_length, ...); distill fills "
        "learning_rate 5e-6 (LoRA) / 5e-7 (full), 1 epoch, cosine, warmup 0.1 (Zephyr). "
        "With on_policy and sft_then_on_policy to trl.DistillationConfig (beta, "
        "max_completion_length, temperature, ...); distill fills learning_rate 2e-4 (LoRA) "
        "/ 2e-5 (full), 1 epoch, cosine, warmup 0.03, and max_completion_length from the "
        "teacher's longest answer.")
    kd: KDSettings = Field(default_factory=KDSettings,
                           description="method kd: the divergence and the teacher's top k.")
    with_reasoning: bool = Field(
        True, description="Records with a reasoning trace (generate.kind: reasoning) train "
        "on trace and answer; false trains on the answer alone.")
    sft_args: dict[TrainArgName, Any] = Field(
        default_factory=dict, description="sft_then_dpo and sft_then_on_policy only: "
        "trl.SFTConfig arguments of the SFT step (defaults and refused packing as for "
        "method sft).")
    global_batch_size: int | None = Field(
        None, ge=1, description="Examples per optimizer step (rows of packed examples when "
        "SFT packs), whatever the number of GPUs: "
        "the training processes set gradient_accumulation_steps = global_batch_size / "
        "(per_device_train_batch_size x processes), and refuse a count that does not divide. "
        "Do not set gradient_accumulation_steps with it. With sft_then_dpo and "
        "sft_then_on_policy it applies to both steps. null: the accumulation in args (TRL's "
        "default 1), so the effective batch grows with the GPU count.")

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings that change what training produces (the train stage's fingerprint).

        `kd` configures method kd only, so another method's runs keep their fingerprints.
        """
        exclude = set(self.OPERATIONAL) | ({"kd"} if self.method != "kd" else set())
        settings = self.model_dump(mode="json", exclude=exclude)
        # the batches SFT will make: packing by default changes them (with_packing_default)
        sft_field = "args" if self.method == "sft" else "sft_args" if self.method in TWO_STEP \
            else None
        if sft_field is not None:
            settings[sft_field] = with_packing_default(settings[sft_field])
        for field in ("args", "sft_args"):  # where the trainer logs is not what it learns
            settings[field] = {key: value for key, value in settings[field].items()
                               if key not in TRACKING_ARGS}
        return settings

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # the keys were checked one by one
        method = info.data.get("method", "sft")
        trainer = ARGS_TRAINER[method]
        value = coerce_numbers(value, trainer)
        if method == "kd":  # SFT arguments that kd's own loss would ignore or break
            from distill.train.kd import check_kd_args

            check_kd_args(value)
        if trainer == "sft":
            check_sft_values(value)
        else:
            if trainer == "dpo" and value.get("padding_free"):
                # TRL 1.16's DPOTrainer only warns and pads: the recipe would not say what ran
                raise ValueError("padding_free: TRL's DPOTrainer turns it off and pads the "
                                 "batches; remove it")
            _check_values(value, trainer)
        return value

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, value: LocalLauncher | RayLauncher,
                  info: ValidationInfo) -> LocalLauncher | RayLauncher:
        if value.kind == "ray":
            from distill.train.ray_launch import check_ray_launch

            check_ray_launch(resolve_path(info.data.get("accelerate_config"), info))
        return value

    @field_validator("sft_args")
    @classmethod
    def _sft_args(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if value and info.data.get("method") not in TWO_STEP:
            raise ValueError(f"only used by method {' or '.join(sorted(TWO_STEP))} (method "
                             "sft takes train.args)")
        value = coerce_numbers(value, "sft")
        check_sft_values(value)
        return value

    @field_validator("global_batch_size")
    @classmethod
    def _global_batch(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        method = info.data.get("method", "sft")
        steps = {"args": ARGS_TRAINER[method]}
        if method in TWO_STEP:
            steps["sft_args"] = "sft"
        for name, trainer in steps.items():
            args = info.data.get(name)
            if args is not None:  # None: already reported as invalid
                check_global_batch_args(value, args, trainer, where=f"train.{name}")
        return value


class TrainSpec(BaseModel):
    """One training job, complete and JSON-serialisable (it crosses process boundaries)."""

    model_config = ConfigDict(extra="forbid")

    method: TrainMethod = "sft"
    model: str = Field(description="Base student: a local checkpoint directory or a hub id.")
    tokenizer: str | None = Field(None, description="Tokenizer location; default: `model`.")
    chat_template: str | None = Field(
        None, description="A Jinja chat template (a file path or the template text) that "
        "replaces the tokenizer's own; saved with the adapter and the merged model.")
    lora: LoraSettings | None = Field(
        default_factory=LoraSettings, description="None trains every weight.")
    args: dict[str, Any] = Field(default_factory=dict, description="train.args, untouched.")
    sft_args: dict[str, Any] = Field(
        default_factory=dict, description="train.sft_args (the SFT step of sft_then_dpo and "
        "sft_then_on_policy), untouched.")
    kd: KDSettings | None = Field(None, description="train.kd (method kd).")
    teacher_tokens_path: str | None = Field(
        None, description="method kd: the teacher's tokens and top-k log-probabilities of "
        "each record (distill.teacher_tokens), by record id.")
    teacher_model: str | None = Field(
        None, description="methods on_policy and sft_then_on_policy: the teacher that scores "
        "the student's samples (a local checkpoint or a hub id).")
    global_batch_size: int | None = Field(
        None, ge=1, description="train.global_batch_size: the training processes set "
        "gradient_accumulation_steps from it and their number.")
    data_path: str = Field(description="JSONL written by distill.records; each row's "
                           "`messages` (user, assistant) is what the student learns, or "
                           "preference pairs (prompt, chosen, rejected) for DPO.")
    output_dir: str = Field(description="Receives adapter/, merged/ and train_log.json.")
    progress_path: str | None = Field(
        None, description="JSON lines of training progress (step, max_steps, loss, ...), "
        "appended by the main process at every step; None writes none.")
    seed: int = 0
    quiet: bool = Field(False, description="No progress bars.")

    def save(self, path: str | Path) -> Path:
        """Write the spec as JSON; its job files inside the file's directory as relative paths.

        Relative paths stay true when the directory is renamed (the runner trains in
        `<round>/.train.work/` and renames it to `<round>/train/`).
        """
        return _save_relative(self, path, _JOB_PATHS)

    @classmethod
    def load(cls, path: str | Path) -> TrainSpec:
        """Read a spec file; relative job paths are relative to the file's directory."""
        return _load_relative(cls, path, _JOB_PATHS)


# TrainSpec fields that name the job's own files (model and tokenizer may be hub ids, and
# are kept as given).
_JOB_PATHS = ("data_path", "output_dir", "progress_path", "teacher_tokens_path")
# TrainResult fields (and those of its `sft_step`) that name its output directories.
_RESULT_PATHS = ("output_dir", "merged_dir", "adapter_dir")
# The first key of a saved spec or result, so that a reader of the file knows what the
# relative paths in it are relative to; dropped again on loading.
_PATHS_NOTE = {"paths_relative_to": "the directory of this file"}


def _save_relative(model: BaseModel, path: str | Path, keys: tuple[str, ...]) -> Path:
    from distill.records import write_json

    path = Path(path)
    data = model.model_dump(mode="json")
    _map_paths(data, keys, lambda value: _relative_to(value, path.parent))
    write_json(path, {**_PATHS_NOTE, **data})
    return path


def _load_relative(cls: type[BaseModel], path: str | Path, keys: tuple[str, ...]) -> Any:
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in _PATHS_NOTE:
        data.pop(key, None)
    _map_paths(data, keys, lambda value: _resolved_against(value, path.parent))
    return cls.model_validate(data)


def _map_paths(data: dict[str, Any], keys: tuple[str, ...],
               change: Callable[[str], str]) -> None:
    for key in keys:
        if data.get(key) is not None:
            data[key] = change(data[key])
    if isinstance(data.get("sft_step"), dict):  # a TrainResult's SFT step (TWO_STEP)
        _map_paths(data["sft_step"], keys, change)


def _relative_to(path: str, base: Path) -> str:
    """`path` relative to `base` when it lies inside it (`.` for `base` itself), else as is."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).as_posix()
    except ValueError:
        return path


def _resolved_against(path: str, base: Path) -> str:
    if Path(path).is_absolute():
        return path
    return os.path.normpath(base / path)


class LossPoint(BaseModel):
    """One logged training loss."""

    step: int
    loss: float


class TrainResult(BaseModel):
    """What a training job produced; written as `<output_dir>/train_log.json`."""

    model_config = ConfigDict(extra="forbid")

    method: str = "sft"
    output_dir: str
    merged_dir: str = Field(description="Plain checkpoint: the next round's teacher, vLLM's model.")
    adapter_dir: str | None = Field(None, description="The LoRA adapter (None: full fine-tune).")
    num_examples: int
    num_processes: int = 1
    steps: int = 0
    epochs: float = 0.0
    loss_history: list[LossPoint] = Field(default_factory=list)
    first_loss: float | None = None
    final_loss: float | None = Field(None, description="The last logged training loss.")
    train_loss: float | None = Field(None, description="Mean loss over the whole run (Trainer).")
    ranks_in_sync: bool | None = Field(
        None, description="Under DDP: whether every rank ended with the same weights "
        "(None: one process, or sharded training).")
    tokens_seen: int = Field(0, description="Non-padding tokens fed to the model, all ranks.")
    loss_tokens_per_epoch: int = Field(0, description="Tokens that carry loss in one epoch.")
    packing: str = Field(
        "padded", description="How the examples were batched: padded, padding-free, or "
        "packed (strategy, padding-free) (config.packing_mode).")
    loss_mask: Literal["assistant", "completion", "none"] = Field(
        "assistant", description="Which tokens carry loss: assistant turns (chat template "
        "generation markers), the completion after the prompt, or every token.")
    trainable_params: int = 0
    total_params: int = 0
    wall_time_s: float = 0.0
    args: dict[str, Any] = Field(default_factory=dict, description="Resolved SFTConfig arguments.")
    reward_margin_start: float | None = Field(
        None, description="DPO: mean chosen-minus-rejected implicit reward "
        "(beta * log-ratio to the reference) in the first logged steps.")
    reward_margin_end: float | None = Field(
        None, description="DPO: the same in the last logged steps.")
    reward_accuracy_end: float | None = Field(
        None, description="DPO: share of pairs whose chosen reward beats the rejected one, "
        "last logged steps.")
    reward_margin_history: list[LossPoint] = Field(
        default_factory=list, description="DPO: logged reward margin per step (in `loss`).")
    completion_mean_length_start: float | None = Field(
        None, description="on_policy: mean tokens per student sample in the first logged "
        "steps (TRL's completions/mean_length).")
    completion_mean_length_end: float | None = Field(
        None, description="on_policy: the same in the last logged steps.")
    completion_clipped_ratio_start: float | None = Field(
        None, description="on_policy: share of student samples cut at "
        "max_completion_length in the first logged steps (TRL's completions/clipped_ratio).")
    completion_clipped_ratio_end: float | None = Field(
        None, description="on_policy: the same in the last logged steps.")
    sft_step: dict[str, Any] | None = Field(
        None, description="sft_then_dpo and sft_then_on_policy: the SFT step's own result.")

    def save(self, path: str | Path) -> Path:
        """Write `train_log.json`: paths relative to its directory (the output directory).

        The record then stays true after the runner renames `.train.work/` to `train/`.
        """
        return _save_relative(self, path, _RESULT_PATHS)

    @classmethod
    def load(cls, path: str | Path) -> TrainResult:
        """Read a `train_log.json`; its relative paths are resolved against its directory."""
        return _load_relative(cls, path, _RESULT_PATHS)

    def summary(self) -> dict[str, Any]:
        """The result without its paths and arguments: the train stage manifest's summary.

        The paths of a result read back from the work directory name that directory, which
        the stage's commit renames; `train_log.json` keeps them, relative to itself.
        """
        data = self.model_dump(mode="json", exclude={*_RESULT_PATHS, "args"})
        if isinstance(data.get("sft_step"), dict):
            data["sft_step"] = {key: value for key, value in data["sft_step"].items()
                                if key not in _RESULT_PATHS}
        return data


def training_record(model_dir: str | Path) -> TrainResult | None:
    """The record of the distill training that wrote a merged checkpoint, if one did.

    A train stage writes `<output_dir>/merged/` beside `<output_dir>/train_log.json`, whose
    `merged_dir` names it; any other checkpoint (a hub model, the microworld's, a base
    student) has none. Perplexity under a student reads its `loss_mask` from here: what
    the student was trained to predict.
    """
    path = Path(model_dir)
    log = path.parent / "train_log.json"
    if not path.is_dir() or not log.is_file():
        return None
    result = TrainResult.load(log)
    return result if Path(result.merged_dir).resolve() == path.resolve() else None
