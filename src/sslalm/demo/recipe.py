"""What the demo trains: the two tiny models, the curriculum stages and the full / quick schedules.

The stages mirror ``configs/stage1..4.yaml`` (LTU's curriculum, docs/ltu.md): which parts train, which tasks
they see and how their learning rates relate, scaled down to minutes on a CPU (a test checks that the
trainable parts and task groups agree with the YAML files). The schedules set the sizes; every number in
them was chosen from measurements on the corpus (see the demo's report for what they give).

Two departures from the paper's stages, both set by the schedule (``stage_parts``) and both measured on the
3,000-clip corpus (tiny ssLALM, encoder pretrained in stage 0, 1 thread, test-split accuracy with the
paper's prompt / the corpus's label question):

- ``tune_lm``: stages 2-4 also train the stand-in LM's own weights (part ``lm``). The paper's LM is a
  pretrained 2.8B model that LoRA only steers; ours is a 0.1M-parameter model that saw minutes of text.
  With LoRA alone (rank 64 on in/x/dt projections, 600 steps) it reached 25.8 % / 37.5 %, with its weights
  tuned 36.0 % / 50.0 % in the same steps.
- ``encoder_frozen_in``: stage 2 leaves the encoder as stage 0 trained it. Training it there cost 0.46 CPU
  s/step instead of 0.22 and was no better per step (32.2 % vs 34.5 % label accuracy after 200 steps);
  stages 3 and 4 train it as the paper does.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

CLA_TASKS = ("cla_label", "caption")  # "classification + acoustic description" (combine_cla.json)


@dataclass(frozen=True)
class StageSpec:
    """One curriculum stage at demo scale. ``tasks`` None: every task (closed and open-ended)."""

    number: int
    title: str  # its data
    tasks: tuple[str, ...] | None
    trainable: tuple[str, ...]
    lr_factor: float  # times the schedule's base learning rate
    config: str  # the paper-scale YAML it mirrors


def curriculum() -> tuple[StageSpec, ...]:
    """The four stages of ``configs/stage*.yaml``; the closed-ended task list comes from the corpus."""
    from sslalm.data.corpus import CLOSED_TASKS

    all_parts = ("projector", "encoder", "lora")
    return (
        StageSpec(1, "classification + captions", CLA_TASKS, ("projector",), 1.0, "configs/stage1.yaml"),
        StageSpec(2, "classification + captions", CLA_TASKS, all_parts, 0.5, "configs/stage2.yaml"),
        StageSpec(
            3,
            "all closed-ended tasks",
            tuple(CLOSED_TASKS),
            all_parts,
            0.5,
            "configs/stage3.yaml",
        ),
        StageSpec(4, "closed + open-ended tasks", None, all_parts, 0.5, "configs/stage4.yaml"),
    )


@dataclass
class Schedule:
    """Sizes of one demo run (``full`` or ``quick``)."""

    name: str
    corpus_size: int
    frames: int  # training crop and shortest inference input, in 10 ms frames
    vocab_size: int  # byte-level BPE trained on the training split's text
    lm_steps: int  # stage 0: language model on the training text
    lm_batch: int
    lm_lr: float
    encoder_steps: int  # stage 0: audio encoder on the training labels (0: skip)
    encoder_batch: int
    encoder_lr: float
    stage_steps: tuple[int, int, int, int]  # curriculum stages 1-4
    batch_size: int
    learning_rate: float  # stage 1; later stages use StageSpec.lr_factor times this
    train_on_inputs: bool = False  # loss on the answer only (LTU: on the whole text)
    tune_lm: bool = True  # stages 2-4 also train the stand-in LM's weights (module docstring)
    encoder_frozen_in: tuple[int, ...] = (2,)  # stages that leave the stage-0 encoder as it is
    eval_batch: int = 16
    max_new_tokens: int = 48
    qa_examples: int = 6
    latency_clips: int = 5
    latency_tokens: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FULL = Schedule(
    name="full",
    corpus_size=3000,
    frames=256,
    vocab_size=1024,
    lm_steps=400,
    lm_batch=32,
    lm_lr=5e-3,
    encoder_steps=600,
    encoder_batch=16,
    encoder_lr=3e-3,
    stage_steps=(50, 800, 150, 150),
    batch_size=16,
    learning_rate=4e-3,
)

QUICK = dataclasses.replace(  # the same pipeline at CI size
    FULL,
    name="quick",
    corpus_size=600,
    vocab_size=512,
    lm_steps=150,
    encoder_steps=300,
    stage_steps=(30, 400, 60, 60),
    qa_examples=4,
    latency_clips=3,
    latency_tokens=16,
)

SCHEDULES = {"full": FULL, "quick": QUICK}


@dataclass
class ModelRecipe:
    """One model of the demo: ``SSLALMConfig`` fields of its preset plus the stage-0 architecture."""

    key: str  # folder name under the demo's output
    title: str
    preset: str
    encoder_type: str
    encoder_config: dict[str, Any] = field(default_factory=dict)
    lm_type: str = "mamba"
    lm_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))


def stage_parts(spec: StageSpec, schedule: Schedule) -> tuple[str, ...]:
    """The parts a demo stage trains: the paper's (``spec.trainable``), with the schedule's departures."""
    parts = [p for p in spec.trainable if not (p == "encoder" and spec.number in schedule.encoder_frozen_in)]
    if schedule.tune_lm and spec.number > 1:
        parts.append("lm")
    return tuple(parts)


def sslalm_recipe() -> ModelRecipe:
    """The paper's ssLALM at toy size: DASS (dims 8-16-32-64) + conv projector + Mamba (64 wide, 2 layers)."""
    from sslalm.models.dass import DASSConfig

    return ModelRecipe(
        key="sslalm",
        title="ssLALM (DASS + Mamba)",
        preset="tiny-sslalm",
        encoder_type="dass",
        encoder_config=DASSConfig.tiny(drop_path_rate=0.0).to_dict(),
        lm_type="mamba",
        lm_config=dict(d_model=64, n_layer=2),
    )


def transformer_recipe(frames: int) -> ModelRecipe:
    """LTU-style transformer LALM of about the same size: AST + pooling projector + LLaMA.

    Part by part: the AST (64 wide, 2 layers) about as large as the tiny DASS, the LLaMA (64 wide, 2 layers)
    within 1 % of the Mamba LM; LTU's pooling projector is smaller than the paper's convolutional one. The
    AST's window is the training crop (``frames``), so both models see the same audio per example.
    """
    from sslalm.models.lalm_config import TINY_AST, TINY_LLAMA

    return ModelRecipe(
        key="transformer",
        title="Transformer LALM (AST + LLaMA)",
        preset="tiny-ltu",
        encoder_type="ast",
        encoder_config={**TINY_AST, "max_length": frames},
        lm_type="hf",
        lm_config={
            **TINY_LLAMA,
            "intermediate_size": 88,  # base LM parameters within 1 % of the Mamba's
            "bos_token_id": 0,
            "eos_token_id": 0,
            "pad_token_id": 1,
        },
    )
