"""What every training method shares: tokenizer, the train-and-save tail, progress, exit.

A method's module (`sft.py`, `dpo.py`) builds its TRL trainer from a `TrainSpec` and
hands it to `train_and_save` as a `PreparedTraining`; everything after that is the same
for every method:

- train, with a `progress_callback` appending one JSON line per step to the spec's
  `progress_path` (the parent of an `accelerate launch` tails that file);
- save the adapter (or the full weights), merge it into `merged/`, write
  `train_log.json` (a `TrainResult`);
- as `python -m <module> spec.json`: `run_entry_point`, then close the process group.

Under `accelerate launch` every rank runs all of it; the main rank alone writes files.
Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from distill.train import lifeline
from distill.train.config import LossPoint, TrainResult, TrainSpec

log = logging.getLogger("distill.train")


# -- model and tokenizer -------------------------------------------------------------------

def load_chat_template(value: str | None) -> str | None:
    """A chat template given as a file path or as the template text itself."""
    if value is None:
        return None
    if "{{" in value or "{%" in value:
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"chat template {value!r}: no such file")
    return path.read_text(encoding="utf-8")


def load_tokenizer(spec: TrainSpec):
    """The student's tokenizer, with the spec's chat template when it overrides one.

    Its EOS becomes the token that closes the template's assistant turns (`use_turn_end_as_eos`).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or spec.model)
    template = load_chat_template(spec.chat_template)
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise ValueError(f"{spec.tokenizer or spec.model}: the tokenizer has no chat template; "
                         "give the student one (student.chat_template in the recipe)")
    use_turn_end_as_eos(tokenizer)
    return tokenizer


_TURN_PROBE = "distill-turn-end-probe"


def assistant_turn_end(tokenizer) -> str | None:
    """The special token that closes an assistant turn in the tokenizer's chat template.

    Renders a one-turn conversation and takes the first special token after the
    assistant's text: `<|im_end|>` for ChatML (Qwen), `<|eot_id|>` for Llama 3,
    `<end_of_turn>` for Gemma. None if no special token closes the turn, or the template
    does not render the probe.
    """
    from jinja2 import TemplateError

    messages = [{"role": "user", "content": "Hello."},
                {"role": "assistant", "content": _TURN_PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except (TemplateError, ValueError, TypeError):
        return None
    at = text.rfind(_TURN_PROBE) if isinstance(text, str) else -1
    if at < 0:
        return None
    special = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special}
    after = tokenizer(text[at + len(_TURN_PROBE):], add_special_tokens=False)["input_ids"]
    first = next((token_id for token_id in after if token_id in special), None)
    return None if first is None else tokenizer.convert_ids_to_tokens(first)


def use_turn_end_as_eos(tokenizer) -> None:
    """Make the token that closes assistant turns the tokenizer's EOS, if it is another.

    A base model's EOS often ends documents, not turns: Qwen2.5 base has `<|endoftext|>`
    while its ChatML template closes turns with `<|im_end|>`. Trained on that template the
    student ends its answers with `<|im_end|>`, but generation (hf, vLLM, lm-eval) stops
    at EOS and would run on into made-up turns. With the turn end as EOS, the saved
    tokenizer says so, and the saved models' generation configs stop at it as well as at
    the old EOS (`distill.train.merge.stop_at_eos`).
    """
    turn_end = assistant_turn_end(tokenizer)
    if turn_end is None or turn_end == tokenizer.eos_token:
        return
    log.info("EOS: %s, which ends the chat template's assistant turns (the tokenizer's was %s)",
             turn_end, tokenizer.eos_token)
    tokenizer.eos_token = turn_end


def trainer_dir(spec: TrainSpec) -> str:
    """The TRL trainer's own `output_dir`, beside adapter/ and merged/.

    It stays empty, and is removed, unless the recipe asks for checkpoints or logs.
    """
    return str(Path(spec.output_dir) / "trainer")


def silence_progress_bars() -> None:
    """No datasets / transformers progress bars in this process (a quiet spec)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


# -- train and save ------------------------------------------------------------------------

def no_summary(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """A method that adds nothing of its own to the `TrainResult`."""
    return {}


@dataclass
class PreparedTraining:
    """A ready TRL trainer and what was decided on the way (for the log and for tests)."""

    trainer: Any
    tokenizer: Any
    args: dict[str, Any]
    loss_mask: str
    num_examples: int
    # the method's own `TrainResult` fields, read from TRL's log history (DPO's margins)
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] = no_summary


def train_and_save(spec: TrainSpec, prepared: PreparedTraining, started: float,
                   **fields: Any) -> TrainResult:
    """Train a prepared TRL trainer; save adapter, merged model and train log (any method).

    Every rank calls it; the main rank alone writes files. Every rank returns the same
    result.

    Args:
        spec: The job.
        prepared: The method's trainer, tokenizer and decisions.
        started: `time.perf_counter()` when the job began (for `wall_time_s`).
        **fields: More `TrainResult` fields, recorded as given (sft_then_dpo's `sft_step`).
    """
    from transformers import PrinterCallback

    from distill.train.merge import merge_adapter

    out = Path(spec.output_dir)
    full_finetune = spec.lora is None
    trainer, tokenizer, args = prepared.trainer, prepared.tokenizer, prepared.args
    if spec.quiet:
        trainer.remove_callback(PrinterCallback)  # it prints every log line without tqdm
    if spec.progress_path is not None:
        trainer.add_callback(progress_callback(spec.progress_path))
    trainable, total = count_parameters(trainer.model)
    loss_tokens = count_loss_tokens(trainer.train_dataset)

    output = trainer.train()
    in_sync = ranks_in_sync(trainer)
    if in_sync is False:
        log.warning("the ranks ended training with different weights: check the launch")

    adapter_dir = None if full_finetune else out / "adapter"
    merged_dir = out / "merged"
    # Every rank takes part in saving: FSDP and ZeRO-3 gather the sharded weights first.
    trainer.save_model(str(merged_dir if full_finetune else adapter_dir))
    state = trainer.state
    history = [LossPoint(step=entry["step"], loss=entry["loss"])
               for entry in state.log_history if "loss" in entry and "step" in entry]
    tokens = [entry["num_tokens"] for entry in state.log_history if "num_tokens" in entry]
    accelerator = trainer.accelerator
    is_main = accelerator.is_main_process
    result = TrainResult(
        method=spec.method,
        output_dir=str(out),
        merged_dir=str(merged_dir),
        adapter_dir=None if adapter_dir is None else str(adapter_dir),
        num_examples=prepared.num_examples,
        num_processes=accelerator.num_processes,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        loss_history=history,
        first_loss=history[0].loss if history else None,
        final_loss=history[-1].loss if history else None,
        train_loss=output.training_loss,
        ranks_in_sync=in_sync,
        tokens_seen=int(tokens[-1]) if tokens else 0,
        loss_tokens_per_epoch=loss_tokens,
        loss_mask=prepared.loss_mask,
        trainable_params=trainable,
        total_params=total,
        args=json.loads(json.dumps(args, default=str)),
        **prepared.summarize(state.log_history),
        **fields,
    )
    training_args = trainer.args
    del trainer, output, prepared
    accelerator.free_memory()  # drops its model and optimizer, collects, empties the cache

    if is_main:
        if full_finetune:
            finish_full_checkpoint(merged_dir, tokenizer, spec.model)
        else:
            merge_adapter(spec.model, adapter_dir, merged_dir, tokenizer=tokenizer)
            # the base's generation config with the tokenizer's EOS, beside the adapter for
            # whoever loads base + adapter by hand (the backends read the adapter's tokenizer)
            shutil.copyfile(merged_dir / "generation_config.json",
                            adapter_dir / "generation_config.json")
            relative_adapter_base(adapter_dir, out)
        relative_training_args(merged_dir if full_finetune else adapter_dir, out,
                               training_args)
        result.wall_time_s = round(time.perf_counter() - started, 3)
        result.save(out / "train_log.json")
        with contextlib.suppress(OSError):  # the Trainer's own directory, unless it holds
            Path(trainer_dir(spec)).rmdir()  # checkpoints or logs the recipe asked for
    accelerator.wait_for_everyone()
    result.wall_time_s = round(time.perf_counter() - started, 3)
    return result


# -- records that survive the stage's rename -----------------------------------------------
# The runner trains in `<round>/.train.work/` and renames it `<round>/train/` when the stage
# commits: what the Trainer and PEFT save with an absolute path into the output directory
# would name a directory that no longer exists, so such paths are made relative to it.

def relative_training_args(saved_dir: Path, out: Path, training_args) -> None:
    """Rewrite the Trainer's `training_args.bin` with its paths relative to `out`.

    The pickled arguments name the Trainer's own directory, `out/trainer`; they become
    `trainer`, relative to the training output directory (the stage directory).
    """
    import copy

    import torch

    path = saved_dir / "training_args.bin"
    if not path.is_file():
        return
    relocated = copy.copy(training_args)  # not dataclasses.replace: no __post_init__ again
    for name, value in vars(training_args).items():
        if isinstance(value, str) and _inside(value, out):
            setattr(relocated, name, _relative(value, out))
    torch.save(relocated, path)


def relative_adapter_base(adapter_dir: Path, out: Path) -> None:
    """Name the adapter's base relative to `out` when it lies inside it.

    sft_then_dpo's DPO adapter sits on the SFT step's merged model, `out/sft/merged`: its
    `adapter_config.json` and model card name `sft/merged`, and the card says relative to
    what. A base outside the output directory (a hub id, the student) is kept as given.
    """
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not _inside(base, out):
        return
    relative = _relative(base, out)
    config["base_model_name_or_path"] = relative
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = adapter_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8").replace(base, relative)
        note = (f"\n<!-- distill: base_model {relative} is relative to the training output "
                "directory, the parent of this adapter directory -->\n")
        card.write_text(text.replace("\n---\n", "\n---\n" + note, 1), encoding="utf-8")


def _inside(path: str, directory: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(directory))


def _relative(path: str, directory: Path) -> str:
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(directory)).as_posix()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; sharded (DeepSpeed ZeRO-3) ones counted whole."""
    trainable = total = 0
    for parameter in model.parameters():
        count = getattr(parameter, "ds_numel", None) or parameter.numel()
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def count_loss_tokens(dataset) -> int:
    """Tokens whose prediction is trained (labels not -100, first token excluded)."""
    if "labels" not in dataset.column_names:
        return 0
    return sum(sum(1 for label in row[1:] if label != -100) for row in dataset["labels"])


def ranks_in_sync(trainer) -> bool | None:
    """Under DDP, check that every rank holds the same trained weights (a cheap checksum).

    None where there is nothing to compare: one process, or FSDP / DeepSpeed, whose ranks
    hold different shards by design.
    """
    import torch
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.num_processes < 2 or accelerator.distributed_type in (
            DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    with torch.no_grad():
        weights = [p for p in accelerator.unwrap_model(trainer.model).parameters()
                   if p.requires_grad]
        checksum = torch.stack([
            sum((p.double().sum() for p in weights), torch.zeros((), dtype=torch.float64)),
            sum((p.double().abs().sum() for p in weights), torch.zeros((), dtype=torch.float64)),
        ]).to(accelerator.device)
    gathered = accelerator.gather(checksum[None]).cpu()
    return bool(torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-9, atol=0))


def finish_full_checkpoint(merged_dir: Path, tokenizer, base_model: str) -> None:
    """Make a fully fine-tuned checkpoint ready for inference like a merged one.

    Its generation config stops at the tokenizer's EOS and at the base model's: the
    Trainer aligned the saved one with the tokenizer, dropping the base's.
    """
    from transformers import AutoConfig, GenerationConfig

    from distill.train.merge import stop_at_eos

    tokenizer.save_pretrained(merged_dir)
    config = AutoConfig.from_pretrained(merged_dir)
    config.use_cache = True  # turned off for gradient checkpointing
    generation, base = (_generation_config(path) for path in (merged_dir, base_model))
    generation = generation or GenerationConfig.from_model_config(config)
    stop_at_eos(config, generation, tokenizer, also=_ids(base and base.eos_token_id))
    config.save_pretrained(merged_dir)
    generation.save_pretrained(merged_dir)


def _generation_config(model: str | Path):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model)
    except OSError:  # the checkpoint has none
        return None


def _ids(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


# -- progress ------------------------------------------------------------------------------

def progress_callback(path: str | Path | None = None,
                      report: Callable[[int, int], None] | None = None):
    """A `transformers.TrainerCallback` that records every training step.

    On the main process only, at the start of training and after every optimizer step, it
    appends one JSON line to `path`: {"step", "max_steps", "epoch"} and, on steps the
    Trainer logs, the logged values ("loss", "learning_rate", "grad_norm", ...). The
    Trainer's closing log line ("train_loss", "train_runtime", ...) is one more line at the
    last step. `report(step, max_steps)` is called at the same moments.
    """
    return _progress_callback_class()(path, report)


@functools.cache
def _progress_callback_class() -> type:
    # Built on first use, so that importing this module does not import transformers.
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def __init__(self, path: str | Path | None,
                     report: Callable[[int, int], None] | None) -> None:
            self.path = None if path is None else Path(path)
            self.report = report

        def on_train_begin(self, args, state, control, **kwargs):
            self._record(state)

        def on_step_end(self, args, state, control, **kwargs):
            if not control.should_log:  # a logged step is recorded by on_log, with its loss
                self._record(state)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self._record(state, logs)

        def _record(self, state, logs: dict[str, Any] | None = None) -> None:
            if not state.is_world_process_zero:
                return
            if self.path is not None:
                line = {"step": state.global_step, "max_steps": state.max_steps,
                        "epoch": state.epoch or 0.0, **(logs or {})}
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line, default=str) + "\n")
            if self.report is not None:
                self.report(state.global_step, state.max_steps)

    return StepProgress


# -- entry point ---------------------------------------------------------------------------

def run_entry_point(train: Callable[[TrainSpec], TrainResult],
                    summary: Callable[[TrainResult], str], argv: list[str] | None) -> int:
    """What `python -m <module> spec.json` does: train, then rank 0 prints `summary`."""
    module = train.__module__
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = train(TrainSpec.load(argv[0]))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{module}: {summary(result)}", flush=True)
    close_process_group()
    return 0


def run_as_main(module: str) -> NoReturn:
    """What a method's module does when `python -m` runs it: its importable copy's `main()`.

    `python -m` runs the file as `__main__`, a second copy of the module, whose functions
    would register in `distill.registry.TRAINERS` a second time beside the importable
    module's; so the `__main__` copy stops before it defines anything. A trainer dies with
    the launcher that started it (`distill.train.lifeline`).
    """
    lifeline.die_with_parent(os.getppid())
    sys.exit(importlib.import_module(module).main())


def close_process_group() -> None:
    """Leave the process group the Trainer joined, so the process exits without a warning."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
