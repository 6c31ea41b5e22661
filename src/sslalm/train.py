"""Train one curriculum stage (``sslalm train --config configs/stageN.yaml [--key value ...]``).

LTU's four-stage curriculum (``docs/ltu.md``, "The four-stage curriculum") on the Hugging Face Trainer, as LTU
did: each stage is a YAML file of ``StageConfig`` fields (which parts train, data, learning rate, epochs,
warm-up, effective batch 256 reached by gradient accumulation), and stage k starts from stage k-1's output
folder (``init_from``). Several GPUs or machines: launch the same command under ``torchrun`` (DDP); FSDP or
DeepSpeed go through ``training_args`` (the Trainer's own options).

What we add to the stock ``Trainer`` and why (``StageTrainer``):

- Checkpoints are ``model.save_pretrained`` folders (config + encoder, projector and LoRA weights, as LTU kept
  only LoRA + audio weights), instead of the Trainer's full state dict: the frozen language model would make
  every checkpoint gigabytes, and its tied embeddings cannot go into safetensors. A checkpoint is therefore
  also a model folder (``init_from`` or ``sslalm ask`` can use it). Optimizer, scheduler, RNG and trainer
  state are the Trainer's own, so ``--resume`` continues exactly. The Trainer writes checkpoints in place,
  so ``--resume`` takes the newest *complete* one (``last_checkpoint``), skipping a half-written folder.
- The loss of a micro-batch is rescaled from the model's per-token mean to a share of the whole effective
  batch's token count (the Trainer's ``num_items_in_batch``), so that two processes with batch b give the same
  update as one process with batch 2b, and gradient accumulation is exact.
- The dataset's random crops follow the epoch (``set_epoch``) so that a resumed run sees the same audio.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sslalm.errors import UserError
from sslalm.models.lalm_config import PARTS
from sslalm.schema import ConfigError, Spec, check_fields, check_keys

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"  # what the model's save_pretrained writes: its trainable parts
STAGE_CONFIG_FILE = "stage_config.yaml"


def _opt(default: Any = dataclasses.MISSING, help: str = "", factory: Any = None) -> Any:
    """A dataclass field with its ``--help`` text (``factory`` for list/dict defaults)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class StageConfig:
    """One curriculum stage. Every field can be set in the YAML file or as ``--field value`` on the CLI."""

    output_dir: str = _opt(help="where checkpoints, logs and the stage's model are written")
    train_files: list[str] = _opt(factory=list, help="OpenAQA JSON/JSONL data files")
    model: str = _opt("sslalm-small", "SSLALMConfig preset, used when init_from is not set")
    model_overrides: dict[str, Any] = _opt(factory=dict, help="config attributes set on the preset")
    init_from: str | None = _opt(None, "previous stage's output folder")
    trainable: list[str] = _opt(factory=lambda: ["projector"], help=f"subset of {PARTS}")
    tasks: list[str] | None = _opt(None, "keep only records with these tasks")
    balance_labels: float = _opt(
        0.0, "draw records with weight n^-power, n = records of the task with the clip's label (0: off)"
    )
    label_task: str = _opt("cla_label", "task whose answer is a clip's label, for balance_labels")
    task_weights: dict[str, float] = _opt(
        factory=dict, help="task -> draw weight factor (a rare task drawn more often; others 1)"
    )
    strict_data: bool = _opt(False, "fail on the first bad record or clip")
    check_audio: str = _opt("exists", "'exists' or 'decode' (decode every clip up front)")
    crop_seconds: float | None = _opt(10.24, "longest audio per example")
    cutoff_len: int = _opt(108, "text tokens per example (LTU: 108)")
    train_on_inputs: bool = _opt(True, "loss on the prompt too (LTU) or on the answer only")
    loss_per_example: bool = _opt(
        False, "average the loss per example, then over examples (a one-word answer weighs as a caption)"
    )
    learning_rate: float = _opt(1e-4, "peak learning rate")
    num_train_epochs: float = _opt(1.0, "passes over the data")
    max_steps: int = _opt(-1, "optimizer steps; overrides epochs when > 0")
    warmup_steps: int = _opt(100, "linear warm-up steps")
    lr_scheduler_type: str = _opt("linear", "Trainer scheduler name")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    max_grad_norm: float = _opt(1.0, "gradient clipping (0: off)")
    optim: str = _opt("adamw_torch", "Trainer optimizer name")
    per_device_train_batch_size: int = _opt(4, "micro-batch per process")
    effective_batch_size: int = _opt(256, "examples per optimizer step (micro-batch x processes x accum.)")
    bf16: Any = _opt("auto", "true, false or auto (bf16 where the GPU supports it)")
    seed: int = _opt(42, "seed of initialisation, data order and crops")
    save_steps: int = _opt(500, "checkpoint every N optimizer steps")
    save_total_limit: int | None = _opt(5, "checkpoints kept (the oldest are deleted)")
    logging_steps: int = _opt(10, "log every N optimizer steps")
    report_to: list[str] = _opt(factory=lambda: ["tensorboard"], help="log sinks (tensorboard, none, ...)")
    dataloader_num_workers: int = _opt(4, "data loading processes per GPU")
    audio_cache_mb: float = _opt(1024.0, "decoded clips kept in memory, per data-loading process (0: off)")
    resume: Any = _opt(False, "true: the last checkpoint in output_dir; or a checkpoint folder")
    overwrite_output_dir: bool = _opt(False, "allow an output_dir that already has checkpoints")
    training_args: dict[str, Any] = _opt(factory=dict, help="more TrainingArguments (fsdp, deepspeed, ...)")

    def __post_init__(self) -> None:
        """Types and ranges of every field (``STAGE_SPECS``); a schedule that trains no step is refused."""
        for name, value in check_fields(self.__dict__, STAGE_SPECS).items():
            setattr(self, name, value)
        bad = sorted(set(self.trainable) - set(PARTS))
        if bad or not self.trainable:
            raise ConfigError(
                f"trainable must be a non-empty subset of {PARTS}, got {self.trainable}", "trainable"
            )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(
                f"max_steps must be a positive number of steps, or -1 to train num_train_epochs; got "
                f"{self.max_steps}",
                "max_steps",
            )
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ConfigError(
                f"this schedule trains zero steps (max_steps {self.max_steps}, num_train_epochs "
                f"{self.num_train_epochs}): set num_train_epochs > 0 or max_steps > 0",
                "num_train_epochs",
            )
        if (
            isinstance(self.bf16, str)
            and self.bf16.lower() != "auto"
            or not isinstance(self.bf16, (bool, str))
        ):
            raise ConfigError(f"bf16 must be true, false or auto, got {self.bf16!r}", "bf16")
        if not isinstance(self.resume, (bool, str)):
            raise ConfigError(
                f"resume must be true, false or a checkpoint folder, got {self.resume!r}", "resume"
            )
        from sslalm.models.lalm_config import SSLALMConfig

        names = [f.name for f in dataclasses.fields(SSLALMConfig)]
        check_keys("model_overrides", self.model_overrides, names)
        for task, factor in self.task_weights.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1000:
                raise ConfigError(
                    f"task_weights[{task!r}] must be a number in (0, 1000], got {factor!r}", "task_weights"
                )


STAGE_SPECS: dict[str, Spec] = {
    "output_dir": Spec("str", nonempty=True),
    "train_files": Spec("str_list"),
    "model": Spec("str", nonempty=True),
    "model_overrides": Spec("mapping"),
    "init_from": Spec("str", optional=True, nonempty=True),
    "trainable": Spec("str_list", nonempty=True),
    "tasks": Spec("str_list", optional=True),
    "balance_labels": Spec("float", 0, 4),
    "label_task": Spec("str", nonempty=True),
    "task_weights": Spec("mapping"),
    "strict_data": Spec("bool"),
    "check_audio": Spec("str", choices=("exists", "decode")),
    "crop_seconds": Spec("float", 0, 3600, low_open=True, optional=True),
    "cutoff_len": Spec("int", 1, 1_000_000),
    "train_on_inputs": Spec("bool"),
    "loss_per_example": Spec("bool"),
    "learning_rate": Spec("float", 0, 10, low_open=True),
    "num_train_epochs": Spec("float", 0, 1_000_000),
    "max_steps": Spec("int"),  # -1 or > 0: checked in __post_init__
    "warmup_steps": Spec("int", 0),
    "lr_scheduler_type": Spec("str", nonempty=True),
    "weight_decay": Spec("float", 0, 10),
    "max_grad_norm": Spec("float", 0),
    "optim": Spec("str", nonempty=True),
    "per_device_train_batch_size": Spec("int", 1, 1_000_000),
    "effective_batch_size": Spec("int", 1, 100_000_000),
    "seed": Spec("int", 0, 2**32 - 1),
    "save_steps": Spec("int", 1),
    "save_total_limit": Spec("int", 1, optional=True),
    "logging_steps": Spec("int", 1),
    "report_to": Spec("str_list"),
    "dataloader_num_workers": Spec("int", 0, 1024),
    "audio_cache_mb": Spec("float", 0, 1 << 30),
    "overwrite_output_dir": Spec("bool"),
    "training_args": Spec("mapping"),
}


# ---- configuration ---------------------------------------------------------------------------------------


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Turn a YAML or command-line value into the field's type (``"1e-3"`` → float, ``"a,b"`` → list)."""
    import yaml

    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
        if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "~"):
            return None
        return _coerce(name, args[0], value)
    if hint is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.lstrip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            value = [value]
        return [str(v).strip() for v in value]
    if origin is dict:
        value = yaml.safe_load(value) if isinstance(value, str) else value
        return value  # a non-mapping is named by the field check
    if hint is bool:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if hint in (int, float) and isinstance(value, str):  # command-line text: "7", "1e-3"
        try:
            return hint(value)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise ConfigError(f"{name} must be {kind}, got {value!r}", name) from None
    return value  # YAML values keep their type; the field check refuses a wrong one


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> StageConfig:
    """A ``StageConfig`` from a YAML file (may be None) with ``overrides`` (field → value) applied on top."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise UserError(f"stage config {path} does not exist") from None
        except PermissionError:
            raise UserError(f"cannot read {path}: permission denied") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserError(f"{path} is not valid YAML{where}: {problem}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: a stage config must be a YAML mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(StageConfig)
    names = [f.name for f in dataclasses.fields(StageConfig)]
    try:
        check_keys("", values, names, ["output_dir"], what="stage config key")
        return StageConfig(**{k: _coerce(k, hints[k], v) for k, v in values.items()})
    except ConfigError as err:
        raise (err.within(str(path)) if path is not None else err) from None


def gradient_accumulation_steps(effective_batch: int, per_device_batch: int, num_devices: int) -> int:
    """Accumulation steps so that micro-batch x devices x steps == effective batch (must divide exactly)."""
    per_step = per_device_batch * num_devices
    if effective_batch % per_step:
        raise ConfigError(
            f"effective_batch_size {effective_batch} is not a multiple of per_device_train_batch_size "
            f"{per_device_batch} x {num_devices} device(s) = {per_step}; change one of them"
        )
    return effective_batch // per_step


def resolve_bf16(value: Any) -> bool:
    """``auto``: bf16 mixed precision where a CUDA GPU supports it (fp32 elsewhere)."""
    if isinstance(value, str) and value.lower() == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(value)


CHECKPOINT_STATE_FILES = ("optimizer.pt", "scheduler.pt")  # the Trainer's, needed to continue exactly


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None if it is complete.

    Complete means: ``trainer_state.json`` parses; the weights file reads back whole with finite values;
    the optimizer and scheduler states are there and their archives are intact (every member's CRC is
    checked; nothing is unpickled). DeepSpeed / FSDP checkpoints keep the optimizer elsewhere
    (``global_step*`` / ``optimizer_0``); those folders only need to exist.
    """
    import json
    import zipfile

    from sslalm.models.mamba_config import _load_safetensors, check_finite

    path = Path(path)
    if not path.is_dir():
        return "it is not a folder"
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"trainer_state.json is missing or unreadable ({type(err).__name__})"
    if not (path / WEIGHTS_FILE).is_file():
        return f"it has no {WEIGHTS_FILE}"
    try:
        check_finite(_load_safetensors(path / WEIGHTS_FILE, "cpu"), path / WEIGHTS_FILE)
    except UserError as err:
        return f"its weights do not load: {err}"
    sharded = any(path.glob("global_step*")) or any(path.glob("optimizer_0*"))
    for name in () if sharded else CHECKPOINT_STATE_FILES:
        file = path / name
        if not file.is_file():
            return f"it has no {name} (the optimizer/scheduler state)"
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as err:
            return f"{name} is unreadable ({err})"
        if bad is not None:
            return f"{name} is corrupt (member {bad})"
    return None


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` folder in ``output_dir``, or None.

    The Trainer writes a checkpoint in place, so a run killed while saving leaves a partial folder with the
    highest number, and a disk error can damage any file. Each candidate, newest first, is verified with
    ``checkpoint_problem``; a broken one is skipped with a warning that says why, and the one used is logged.
    """
    import re

    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    skipped = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                logger.warning("resuming from %s, the newest complete checkpoint", path)
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
        skipped.append(path)
    return None


def _has_checkpoints(output_dir: str | os.PathLike) -> bool:
    return os.path.isdir(output_dir) and any(Path(output_dir).glob("checkpoint-*"))


# ---- model, data and trainer -----------------------------------------------------------------------------


def build_model(cfg: StageConfig) -> torch.nn.Module:
    """The stage's starting model: the previous stage's output, or a preset with ``model_overrides``.

    A preset's random parts (projector, LoRA, tiny test LMs) are initialised from ``cfg.seed``, so every
    process of a DDP run, and a resumed run, builds the same model.

    An override whose current value is a mapping (``encoder_config``, ``lm_config``) is merged into it, so
    ``{encoder_config: {drop_path_rate: 0}}`` changes one entry.
    """
    from transformers import set_seed

    from sslalm.models.lalm import SSLALM, SSLALMConfig

    set_seed(cfg.seed)
    if cfg.init_from:
        if not os.path.isdir(cfg.init_from):
            raise UserError(f"init_from {cfg.init_from} is not a folder; train that stage first")
        if cfg.model_overrides:
            logger.warning("model_overrides are ignored: the model comes from init_from %s", cfg.init_from)
        logger.info("starting from %s", cfg.init_from)
        return SSLALM.from_pretrained(cfg.init_from)
    config = SSLALMConfig.preset(cfg.model)
    for key, value in cfg.model_overrides.items():
        current = getattr(config, key)
        if isinstance(current, dict) and isinstance(value, dict):
            value = {**current, **value}
        setattr(config, key, value)
    try:
        config.validate()
    except ConfigError as err:
        raise err.within("model_overrides") from None
    return SSLALM(config)


def build_dataset(cfg: StageConfig, model: torch.nn.Module):
    """The stage's OpenAQA dataset; an unreadable data file (or, with ``strict_data``, a bad record) is a
    ``UserError`` naming it."""
    from sslalm.data.openaqa import DatasetError, OpenAQADataset

    if not cfg.train_files:
        raise ConfigError("the stage config names no train_files", "train_files")
    try:
        processor = model.processor.with_text_settings(
            cutoff_len=cfg.cutoff_len, train_on_inputs=cfg.train_on_inputs
        )
        return OpenAQADataset(
            cfg.train_files,
            tasks=cfg.tasks,
            strict=cfg.strict_data,
            crop_seconds=cfg.crop_seconds,
            seed=cfg.seed,
            train=True,
            check_audio=cfg.check_audio,
            processor=processor,
            audio_cache_bytes=int(cfg.audio_cache_mb * 2**20),
        )
    except DatasetError as err:
        raise UserError(str(err)) from err


def training_arguments(cfg: StageConfig):
    """``TrainingArguments`` for the stage, with accumulation set from the number of processes."""
    from transformers import TrainingArguments

    extra = dict(cfg.training_args)
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        bf16=resolve_bf16(cfg.bf16),
        seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=cfg.report_to or "none",
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,  # the dataset yields exactly what forward takes, fbank included
        label_names=["labels"],
        ddp_find_unused_parameters=False,  # every trainable part is used in every forward
        use_cpu=not torch.cuda.is_available(),
    )
    kwargs.update(extra)
    try:
        args = TrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:  # an unknown key, or a value transformers refuses
        raise ConfigError(f"training arguments: {str(err).splitlines()[0]}", "training_args") from None
    if args.n_gpu > 1:
        raise UserError(
            f"{args.n_gpu} GPUs are visible to one process; launch one process per GPU with "
            f"torchrun --nproc_per_node {args.n_gpu} -m sslalm.train ... (DDP)"
        )
    if "gradient_accumulation_steps" not in extra:
        args.gradient_accumulation_steps = gradient_accumulation_steps(
            cfg.effective_batch_size, args.train_batch_size, args.world_size
        )
    return args


def load_trainable(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint's weights file into ``model``; every trainable parameter must be in it."""
    from safetensors.torch import load_file

    state = load_file(os.fspath(path))
    own = model.state_dict(keep_vars=True)
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in state)
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise UserError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each example's target tokens, then over the examples that have any.

    With the usual token average a caption of 15 tokens weighs 15 times a one-token label, so the one token
    that names the class is a small share of the gradient; here every example weighs the same.

    Args:
        logits: (B, N_audio + L, V), the LM's output over the audio tokens and the text.
        labels: (B, L) text targets, -100 where there is no target.
    """
    text_len = labels.shape[1]
    pred = logits[:, logits.shape[1] - text_len - 1 : -1]  # (B, L, V): position i predicts text token i
    tokens = torch.nn.functional.cross_entropy(
        pred.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )  # (B, L)
    counts = labels.ne(-100).sum(dim=1)  # (B,)
    has = counts > 0
    if not has.any():
        return tokens.sum() * 0.0
    return (tokens.sum(dim=1)[has] / counts[has]).mean()


def _make_trainer_class():
    """``StageTrainer`` (a ``transformers.Trainer`` subclass), built on first use to keep imports lazy."""
    from transformers import Trainer, TrainerCallback
    from transformers.integrations import TensorBoardCallback

    class EpochCallback(TrainerCallback):
        """Tell the dataset which epoch starts, for its seeded random crops."""

        def __init__(self, dataset):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kwargs):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(math.floor(state.epoch + 1e-6) if state.epoch else 0)

    class TensorBoardLog(TensorBoardCallback):
        """TensorBoard logging without the model-config text, which assumes a transformers config."""

        def on_train_begin(self, args, state, control, **kwargs):
            kwargs.pop("model", None)
            super().on_train_begin(args, state, control, **kwargs)

    class StageTrainer(Trainer):
        """``Trainer`` that saves trainable weights only and normalises the loss over the effective batch."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # The Trainer then counts the target tokens of each effective batch over all processes and passes
            # the count to compute_loss as num_items_in_batch (the model itself never receives it).
            self.model_accepts_loss_kwargs = True
            if self.train_dataset is not None:
                self.add_callback(EpochCallback(self.train_dataset))
            if self.pop_callback(TensorBoardCallback) is not None:
                self.add_callback(TensorBoardLog)

        def _get_train_sampler(self, train_dataset=None):
            """Label-balanced draws (``StageConfig.balance_labels``, ``sslalm.data.balance``) when the dataset
            carries ``sample_weights``; the Trainer's shuffling otherwise."""
            from sslalm.data.balance import weighted_sampler

            dataset = train_dataset if train_dataset is not None else self.train_dataset
            sampler = weighted_sampler(dataset, self.args.seed)
            return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

        loss_per_example = False  # StageConfig.loss_per_example

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss_per_example and model.training:
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
                loss = per_example_loss(outputs.logits, inputs["labels"])
                loss = loss / self.args.gradient_accumulation_steps  # the Trainer leaves scaling to us
                return (loss, outputs) if return_outputs else loss
            outputs = model(**inputs)
            loss = outputs.loss  # mean over this micro-batch's target tokens
            if num_items_in_batch is not None and model.training:
                local = inputs["labels"].ne(-100).sum()
                total = torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)
                # DDP averages gradients over processes; undo it: the result is sum over all tokens / total
                loss = loss * local / total * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def floating_point_ops(self, inputs) -> int:
            """6 x parameters x (audio + text tokens): a rough count, only for the ``total_flos`` log."""
            model = self.accelerator.unwrap_model(self.model)
            if not hasattr(self, "_num_params"):
                self._num_params = sum(p.numel() for p in model.parameters())
            ids = inputs.get("input_ids")
            if ids is None:
                return 0
            tokens = ids.numel()
            if "fbank" in inputs and hasattr(model, "num_audio_tokens"):
                tokens += ids.shape[0] * model.num_audio_tokens(inputs["fbank"].shape[1])
            return 6 * tokens * self._num_params

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            if not self.args.should_save:
                return
            os.makedirs(output_dir, exist_ok=True)
            model = self.accelerator.unwrap_model(self.model)
            if state_dict is None:  # plain / DDP: the parameters are whole on every process
                model.save_pretrained(output_dir)
            else:  # FSDP / DeepSpeed hand over a gathered state dict: keep what trains
                from safetensors.torch import save_file

                names = {n for n, p in model.named_parameters() if p.requires_grad}
                state = {k: v.contiguous().cpu() for k, v in state_dict.items() if k in names}
                save_file(state, os.path.join(output_dir, WEIGHTS_FILE), metadata={"format": "pt"})
                from sslalm.models.folder import apply_umask

                apply_umask(os.path.join(output_dir, WEIGHTS_FILE))  # safetensors writes 0600
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            path = os.path.join(resume_from_checkpoint, WEIGHTS_FILE)
            if not os.path.isfile(path):
                raise UserError(f"{resume_from_checkpoint} has no {WEIGHTS_FILE}: not a training checkpoint")
            logger.info("resuming weights from %s", path)
            load_trainable(self.accelerator.unwrap_model(model if model is not None else self.model), path)

    return StageTrainer


def train(cfg: StageConfig, model: torch.nn.Module | None = None, callbacks: list | None = None) -> dict:
    """Run one stage; returns the Trainer's final metrics plus ``output_dir`` and ``num_examples``.

    Args:
        cfg: the stage.
        model: an already built model (tests, notebooks); None builds it from ``cfg``.
        callbacks: extra ``TrainerCallback`` objects.
    """
    import yaml

    resume = cfg.resume
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    checkpoint = None
    if resume is True:
        checkpoint = last_checkpoint(cfg.output_dir)
        if checkpoint is None:
            logger.warning(
                "--resume: no complete checkpoint in %s; starting from the beginning", cfg.output_dir
            )
        else:
            logger.info("resuming from %s", checkpoint)
    elif resume:
        checkpoint = os.fspath(resume)
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            fallback = last_checkpoint(Path(checkpoint).parent) if Path(checkpoint).parent.is_dir() else None
            hint = f"; the newest complete one is {fallback}" if fallback else ""
            raise UserError(f"cannot resume from {checkpoint}: {problem}{hint}")
    elif _has_checkpoints(cfg.output_dir) and not cfg.overwrite_output_dir:
        raise UserError(
            f"{cfg.output_dir} already has checkpoints; pass --resume to continue, or overwrite_output_dir"
        )

    args = training_arguments(cfg)
    if model is None:
        model = build_model(cfg)
    model.set_trainable(list(cfg.trainable))
    dataset = build_dataset(cfg, model)
    if len(dataset) == 0:
        raise UserError(f"no training examples in {cfg.train_files}: every record was skipped (see the log)")
    if cfg.balance_labels > 0 or cfg.task_weights:
        from sslalm.data.balance import label_balance_weights, task_weighted

        weights = label_balance_weights(dataset.records, cfg.balance_labels, cfg.label_task)  # power 0: ones
        dataset.sample_weights = task_weighted(weights, dataset.records, cfg.task_weights)
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=dataset.processor,  # the model's processor collates (right-padded text, fbank)
        callbacks=callbacks,
    )
    trainer.loss_per_example = cfg.loss_per_example
    if args.should_save:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(Path(cfg.output_dir) / STAGE_CONFIG_FILE, "w", encoding="utf-8") as fh:
            yaml.safe_dump(dataclasses.asdict(cfg), fh, sort_keys=False)
    n_trainable = model.num_trainable_parameters()
    logger.info(
        "stage: %d examples, trainable %s = %.2f M parameters, %d process(es) x micro-batch %d x "
        "accumulation %d = %d per step, bf16=%s",
        len(dataset),
        list(cfg.trainable),
        n_trainable / 1e6,
        args.world_size,
        args.train_batch_size,
        args.gradient_accumulation_steps,
        args.train_batch_size * args.world_size * args.gradient_accumulation_steps,
        args.bf16,
    )
    from sslalm.data.openaqa import DatasetError

    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except DatasetError as err:  # strict_data: a bad record or clip met during training
        raise UserError(str(err)) from err
    trainer.save_model(cfg.output_dir)  # config + trainable weights: the next stage's init_from
    trainer.save_state()
    if dataset.skips.total or dataset.load_failures:
        logger.warning(
            "data problems: %d record(s) skipped when reading, %d clip(s) failed to load (this process)",
            dataset.skips.total,
            dataset.load_failures,
        )
    return {**result.metrics, "output_dir": cfg.output_dir, "num_examples": len(dataset)}


# ---- command line ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage YAML (configs/stage1.yaml ... stage4.yaml)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="true",
        default=None,
        help="continue from the last checkpoint in output_dir (or from the given checkpoint folder)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail on the first bad record or clip, naming it (strict_data)"
    )
    group = parser.add_argument_group("stage config overrides (any key of the YAML file)")
    for f in dataclasses.fields(StageConfig):
        if f.name == "resume":
            continue
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        help_text = f.metadata.get("help")
        group.add_argument(*flags, dest=f"cfg_{f.name}", default=None, metavar="V", help=help_text)
    parser.epilog = (
        "Several GPUs: torchrun --nproc_per_node N -m sslalm.train --config ... "
        "(gradient accumulation is recomputed to keep the effective batch)."
    )


def run_cli(args: argparse.Namespace) -> int:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if args.resume is not None:
        overrides["resume"] = args.resume
    if args.strict:
        overrides["strict_data"] = True
    cfg = load_config(args.config, overrides)
    metrics = train(cfg)
    logger.info("stage finished: %s", metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sslalm.train ...``: the same as ``sslalm train ...`` (e.g. under torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m sslalm.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sslalm.cli import user_error_message

    try:
        return run_cli(args)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"python -m sslalm.train: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
