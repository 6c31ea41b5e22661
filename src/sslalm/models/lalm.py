"""The audio language model: audio encoder -> projector -> language model (+ LoRA through peft).

``SSLALM`` composes the paper's ssLALM (DASS + Mamba-2.8B) and its comparison systems from one
``SSLALMConfig``; it is composition, trainable parts and save/load, nothing model-specific:

* encoder: ``sslalm.models.encoders`` (``AudioEncoder``: DASS, or transformers' AST for the LTU-style
  baseline), chosen by ``encoder_type``;
* projector: ``sslalm.models.projector`` (the paper's Conv2d + Linear, or LTU's frequency-mean + pooling);
* language model: ``sslalm.models.backends`` (``LanguageModelBackend``: our Mamba, or any transformers causal
  LM such as LLaMA for Hybrid-LALM), chosen by ``lm_type``; LoRA adapters through peft on the configured
  target modules (the backend's default when the config names none);
* processor: ``sslalm.models.processor.SSLALMProcessor`` (fbank, prompt template, tokenisation, collation),
  derived from the config and the tokenizer (``SSLALM.processor``).

Audio tokens come first, then the alpaca-short prompt (``sslalm.prompt``). Training batches are right-padded
(a recurrent LM has no attention mask; pads after the text never reach the state that matters). Labels cover
the text; audio positions get -100 here. ``prompt_embeddings`` gives, per (audio, question), the exact
sequence ``generate`` decodes from; the LM backend does the decoding.

``save_pretrained`` writes ``config.json``, the trainable weights only (encoder, projector, LoRA) in
``model.safetensors``, the tokenizer, and a pointer to the base LM checkpoint. A base LM built from random
weights (tiny presets) has no checkpoint to point at, so it is written once to ``base_lm/`` (by its backend).

Why not transformers' ``PreTrainedModel`` / ``PretrainedConfig``: they would supply ``num_parameters``,
``to_json_string`` and the gradient-checkpointing entry points the Trainer calls (its flag-setting would
reach DASS and our Mamba, which carry a ``gradient_checkpointing`` flag): the ~25 lines of shims below. They
would remove nothing else. Their ``save_pretrained``/``from_pretrained`` write and read the whole state dict
(2.8-6.8 B parameters here, against 43-62 M trained ones) and build the model under their own meta-device
and ``_init_weights`` hooks, so both would be overridden whole to keep adapter-only saving and a base LM
loaded from its own checkpoint inside the constructor; ``PretrainedConfig`` needs a ``model_type`` and writes
its own keys (``transformers_version``, ``architectures``, ``dtype`` ...) into ``config.json``. A larger
contract for the same behaviour, so ``SSLALM`` stays a plain ``nn.Module`` with those few shims.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.backends import LanguageModelBackend, lm_backend
from sslalm.models.encoders import AudioEncoder
from sslalm.models.encoders import build_encoder as _build_registered_encoder
from sslalm.models.lalm_config import (  # noqa: F401  (re-exported)
    ADAPTER_PARTS,
    LLAMA_7B,
    PARTS,
    PRESETS,
    TINY_AST,
    TINY_LLAMA,
    SSLALMConfig,
)
from sslalm.models.processor import SSLALMProcessor
from sslalm.models.projector import build_projector
from sslalm.models.tagger import TagTokens, scale_like, tag_word

logger = logging.getLogger(__name__)
Tensor = torch.Tensor

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
BASE_LM_DIR = "base_lm"


# ----------------------------------------------------------------------------------------------------------
# parts


def build_encoder(config: SSLALMConfig) -> AudioEncoder:
    """The config's audio encoder, randomly initialised (its checkpoint is loaded by ``SSLALM``)."""
    return _build_registered_encoder(config.encoder_type, config.encoder_config)


def _base_lm_config(config: SSLALMConfig, tokenizer_size: int | None, checkpoint: str | None) -> dict:
    """``lm_config`` with ``vocab_size: "auto"`` resolved to the tokenizer's size rounded up to a multiple of
    8 (a checkpoint brings its own config, so it is left as it is then)."""
    cfg = dict(config.lm_config)
    if checkpoint is None and cfg.get("vocab_size") == "auto":
        if tokenizer_size is None:
            raise ValueError("lm_config vocab_size is 'auto' but the model has no tokenizer")
        cfg["vocab_size"] = -(-tokenizer_size // 8) * 8
    return cfg


def build_language_model(
    config: SSLALMConfig, tokenizer_size: int | None, base_dir: Path | None
) -> nn.Module:
    """The base (un-adapted) language model: from its checkpoint if the config names one, else random."""
    checkpoint = _resolve(config.lm_checkpoint, base_dir)
    return lm_backend(config.lm_type).build(_base_lm_config(config, tokenizer_size, checkpoint), checkpoint)


def _resolve(path: str | None, base_dir: Path | None, field: str = "part") -> str | None:
    """A config path: inside the model folder ``base_dir`` when the model was loaded from one (never the
    working directory; a missing part raises ``ModelFolderError``), else as given."""
    from sslalm.models.folder import resolve_part

    return resolve_part(path, base_dir, field)


# ----------------------------------------------------------------------------------------------------------
# the model


class SSLALM(nn.Module):
    """Audio encoder + projector + language model with LoRA. See the module docstring.

    Attributes: ``encoder`` (``AudioEncoder``), ``projector``, ``lm`` (the peft-wrapped base LM),
    ``lm_backend`` (its ``LanguageModelBackend``), ``config``, ``tokenizer``, ``processor``.
    """

    def __init__(self, config: SSLALMConfig, tokenizer: Any = None, _base_dir: Path | None = None):
        super().__init__()
        self.config = config
        self._tokenizer = tokenizer
        self._base_dir = _base_dir
        self._processor: SSLALMProcessor | None = None
        self.lm_backend: LanguageModelBackend = lm_backend(config.lm_type)
        if config.lora_target_modules is None:
            config.lora_target_modules = list(self.lm_backend.lora_target_modules)
        meta = torch.empty(0).device.type == "meta"
        tok_size = None
        if not meta and (tokenizer is not None or config.tokenizer is not None or config.byte_tokenizer):
            tok_size = len(self.tokenizer)
        self.encoder = build_encoder(config)
        if config.encoder_checkpoint is not None and not meta:
            path = _resolve(config.encoder_checkpoint, _base_dir)
            self.encoder.load_checkpoint(path)
            logger.info("loaded %s encoder weights from %s", config.encoder_type, path)
        checkpoint = _resolve(config.lm_checkpoint, _base_dir)
        self._lm_config = _base_lm_config(config, tok_size, checkpoint)  # what a random base LM is saved with
        base = self.lm_backend.build(self._lm_config, checkpoint)
        d_lm = base.get_input_embeddings().weight.shape[1]
        self.projector = build_projector(config, self.encoder.hidden_size, d_lm)
        self.tagger = self._build_tagger(load=not meta) if config.tag_names else None
        self.lm = self._add_lora(base)
        self.set_trainable(ADAPTER_PARTS)

    def _build_tagger(self, load: bool) -> TagTokens:
        """``TagTokens`` for ``config.tag_names``, its head from ``config.tag_checkpoint`` when given and
        ``load`` (not on the meta device)."""
        cfg = self.config
        word_ids = [self.tokenizer.encode(" " + tag_word(t), add_special_tokens=False) for t in cfg.tag_names]
        tagger = TagTokens(
            self.encoder.hidden_size,
            cfg.tag_names,
            word_ids,
            cfg.tag_pool,
            cfg.tag_temperature,
            cfg.tag_cepstra,
            cfg.tag_fact_net,
            cfg.tag_fact_temperature,
        )
        if cfg.tag_checkpoint is not None and load:
            from sslalm.errors import UserError
            from sslalm.models.folder import load_weights

            path = _resolve(cfg.tag_checkpoint, self._base_dir, "tag_checkpoint")
            state = load_weights(path)  # refuses a missing, corrupt or non-finite file
            try:
                tagger.load_head_state(state)
            except ValueError as err:
                raise UserError(
                    f"tag_checkpoint {path}: {err} ({len(cfg.tag_names)} tags, tag_pool {cfg.tag_pool!r}, "
                    f"tag_cepstra {cfg.tag_cepstra}, tag_fact_net {cfg.tag_fact_net}): head and config come "
                    "from different stage-0 runs"
                ) from None
            logger.info("loaded the tag head (%d tags) from %s", len(cfg.tag_names), path)
        return tagger

    def _add_lora(self, base: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        cfg = self.config
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
        )
        model = get_peft_model(base, lora)
        wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        per_target = {t: sum(n.endswith("." + t) for n in wrapped) for t in cfg.lora_target_modules}
        if not wrapped or min(per_target.values()) == 0:
            raise ValueError(f"LoRA targets {cfg.lora_target_modules} matched {per_target} modules")
        return model

    # ------------------------------------------------------------------ tokenizer and processor
    @property
    def tokenizer(self) -> Any:
        """The LM's tokenizer: the config's folder, or a byte-level one for tiny presets without one."""
        if self._tokenizer is None:
            from sslalm.tokenizer import build_byte_tokenizer, load_tokenizer

            path = _resolve(self.config.tokenizer, self._base_dir, "tokenizer")
            if path is not None:
                self._tokenizer = load_tokenizer(path)
            elif self.config.byte_tokenizer:
                self._tokenizer = build_byte_tokenizer([], vocab_size=258)
            else:
                from sslalm.errors import UserError

                raise UserError(
                    "this model has no tokenizer: set SSLALMConfig.tokenizer to a local tokenizer folder "
                    "(GPT-NeoX's for Mamba checkpoints, LLaMA's for LLaMA)"
                )
        return self._tokenizer

    @property
    def processor(self) -> SSLALMProcessor:
        """The processor (fbank, template, tokenisation, collation): ``sslalm.models.processor``."""
        cfg = self.config
        p = self._processor
        if p is None or (p.tokenizer, p.train_frames, p.min_inference_frames) != (
            self.tokenizer,
            cfg.train_frames,
            cfg.min_inference_frames,
        ):
            self._processor = p = SSLALMProcessor.from_config(cfg, self.tokenizer)
        return p

    @property
    def feature_extractor(self) -> Any:
        """The training-crop fbank extractor (``train_frames`` frames, 1024 = 10.24 s)."""
        return self.processor.feature_extractor

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    # ------------------------------------------------------------------ trainable parts
    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by part: ``encoder``, ``projector``, ``lora`` and the base LM's own weights (``lm``)."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {p: [] for p in PARTS}
        for name, p in self.named_parameters():
            if name.startswith("encoder."):
                groups["encoder"].append((name, p))
            elif name.startswith("projector."):
                groups["projector"].append((name, p))
            elif name.startswith("tagger."):  # not a part: the tag head stays as it was loaded
                groups.setdefault("tagger", []).append((name, p))
            elif "lora_" in name:
                groups["lora"].append((name, p))
            else:
                groups["lm"].append((name, p))
        return groups

    def set_trainable(self, parts: Any) -> None:
        """Train only ``parts`` (a subset of ``PARTS``); freeze everything else.

        Training ``lm`` sets ``config.train_lm``: from then on the LM's weights are saved with the model.
        """
        parts = set(parts)
        unknown = parts - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; choose from {PARTS}")
        for group, params in self.parameter_groups().items():
            for _, p in params:
                p.requires_grad_(group in parts)
        if "lm" in parts:
            self.config.train_lm = True

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ what transformers' Trainer calls
    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count (transformers' signature, which the Trainer calls)."""
        skip = set()
        if exclude_embeddings:
            skip = {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(
            p.numel()
            for p in self.parameters()
            if id(p) not in skip and (p.requires_grad or not only_trainable)
        )

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute encoder and LM blocks in the backward pass (less memory for long audio / big LMs)."""
        self.encoder.set_gradient_checkpointing(True, gradient_checkpointing_kwargs)
        self.lm_backend.set_gradient_checkpointing(
            self.lm.get_base_model(), True, gradient_checkpointing_kwargs
        )

    def gradient_checkpointing_disable(self) -> None:
        self.encoder.set_gradient_checkpointing(False)
        self.lm_backend.set_gradient_checkpointing(self.lm.get_base_model(), False)

    # ------------------------------------------------------------------ forward
    def num_audio_tokens(self, num_frames: int) -> int:
        """Audio tokens for an fbank of ``num_frames`` frames (32 per 1024 frames for DASS + conv), plus one
        per tag group with tag tokens."""
        n = self.projector.num_tokens(*self.encoder.feature_map_size(num_frames))
        return n + (self.tagger.num_tokens if self.tagger is not None else 0)

    def encode_audio(self, fbank: Tensor) -> Tensor:
        """(B, T, 128) fbank -> (B, N_audio, d_lm) audio tokens: the projector's (time-major), then the tag
        tokens when the model has them (``sslalm.models.tagger``)."""
        features = self.encoder.forward_features(fbank)  # (B, C, F, T)
        tokens = self.projector(features)  # (B, N, d)
        if self.tagger is None:
            return tokens
        tags = self.tagger(features, self.lm.get_input_embeddings(), fbank)  # (B, groups, d)
        if self.config.tag_scale == "audio":
            tags = scale_like(tags, tokens)
        return torch.cat([tokens, tags.to(tokens.dtype)], dim=1)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def forward(
        self,
        fbank: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Audio tokens followed by the right-padded text; the LM loss covers the text positions.

        Args:
            fbank: (B, T, 128) normalised fbank. input_ids, attention_mask, labels: (B, L).

        Returns:
            the LM's output (``loss`` when labels are given, ``logits`` (B, N_audio + L, V)).
        """
        audio = self.encode_audio(fbank)  # (B, Na, d)
        text = self.embed_tokens(input_ids)  # (B, L, d)
        batch, n_audio = audio.shape[:2]
        embeds = torch.cat([audio.to(text.dtype), text], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([attention_mask.new_ones(batch, n_audio), attention_mask], dim=1)
        full_labels = None
        if labels is not None:
            full_labels = torch.cat([labels.new_full((batch, n_audio), -100), labels], dim=1)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=full_labels)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def prompt_embeddings(self, audios: list[Any], questions: list[str]) -> list[Tensor]:
        """Per (audio, question): the (N_audio + L_text, d_lm) sequence ``generate`` decodes from.

        The whole clip's audio tokens (``processor.inference_features``), then the templated question's
        token embeddings (``processor.prompt_ids``).
        """
        processor = self.processor
        seqs = []
        for audio, question in zip(audios, questions, strict=True):
            fbank = processor.inference_features(audio).to(self.device)[None]  # (1, T, 128)
            audio_tokens = self.encode_audio(fbank)[0]  # (Na, d)
            ids = torch.tensor(processor.prompt_ids(question), device=self.device)
            text = self.embed_tokens(ids)  # (Lt, d)
            seqs.append(torch.cat([audio_tokens.to(text.dtype), text]))
        return seqs

    @torch.inference_mode()
    def generate(self, audios: list[Any], prompts: list[str], **generation: Any) -> list[str]:
        """Answer each (audio, prompt) pair; the batch returns what one-by-one calls return.

        ``audios``: paths, bytes or 16 kHz mono waveforms; whole clips are used (32 tokens per 10.24 s).
        ``generation``: ``sslalm.generate.GenerationConfig`` fields (temperature 0.1, top-k 500, top-p 0.95,
        repetition penalty 1.1 by default; ``do_sample=False`` for greedy; ``seed``; ``max_new_tokens``).
        """
        from sslalm.generate import GenerationConfig

        if not audios:
            return []
        was_training = self.training
        self.eval()
        try:
            tok = self.tokenizer
            gen = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            gen = dataclasses.replace(gen, **generation)
            ids = self.lm_backend.generate(self.lm, self.prompt_embeddings(audios, prompts), gen)
        finally:
            self.train(was_training)
        return [self.processor.decode(row) for row in ids]

    def ask(self, audio: Any, question: str, **generation: Any) -> str:
        """The answer to one question about one clip (path, bytes or 16 kHz waveform)."""
        return self.generate([audio], [question], **generation)[0]

    # ------------------------------------------------------------------ save / load
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Encoder, projector and LoRA weights (what fine-tuning changes), detached and contiguous; the base
        LM's weights too once it was fine-tuned (``config.train_lm``)."""
        groups = self.parameter_groups()
        parts = (PARTS if self.config.train_lm else ADAPTER_PARTS) + ("tagger",)
        out = {n: p for part in parts for n, p in groups.get(part, [])}
        for name, buf in self.named_buffers():
            if name.startswith(("encoder.", "projector.")):
                out[name] = buf
        for name, buf in self.tagger.state_dict(prefix="tagger.").items() if self.tagger is not None else ():
            out.setdefault(name, buf)  # the head's cepstral standardisation (its word ids are rebuilt)
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def save_pretrained(self, path: str | Path) -> None:
        """Write config, trainable weights (safetensors), tokenizer and, if random, the base LM.

        The folder loads from itself alone (``sslalm.models.folder``): a random base LM is written to
        ``base_lm/``; a base LM from outside the folder (another model folder's, a pretrained checkpoint) is
        brought into ``base_lm/`` as hard links (no extra disk) or, on another filesystem, as a copy up to
        ``folder.COPY_LIMIT``; only a larger one on another filesystem is pointed at by absolute path. So a
        run folder whose stages share one stand-in LM still loads after it is moved. Files get the usual
        permissions (``0666 & ~umask``).
        """
        from safetensors.torch import save_file

        from sslalm.models.folder import (
            apply_umask,
            can_bring_along,
            copy_tree_linked,
            is_inside,
            pointer,
            same_tree,
        )

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        source = _resolve(config["lm_checkpoint"], self._base_dir, "lm_checkpoint")
        base_lm = path / BASE_LM_DIR
        if source is None:
            self._save_base_lm(base_lm)
            config["lm_checkpoint"] = BASE_LM_DIR
        elif is_inside(source, path):
            config["lm_checkpoint"] = pointer(source, path)  # relative
        elif can_bring_along(source, path):  # from outside: hard-link (or copy) it into base_lm/
            if not same_tree(source, base_lm):
                if base_lm.exists():  # a different model's, from an earlier save into this folder
                    shutil.rmtree(base_lm)
                copy_tree_linked(source, base_lm)
                apply_umask(base_lm)
            config["lm_checkpoint"] = BASE_LM_DIR
        else:
            config["lm_checkpoint"] = pointer(source, path)
        config["encoder_checkpoint"] = None  # the encoder's weights are in model.safetensors
        config["tag_checkpoint"] = None  # and so are the tag head's
        try:
            self.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
            config["tokenizer"] = TOKENIZER_DIR
        except ValueError:
            logger.warning("model has no tokenizer; saving without one")
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(self.trainable_state_dict(), str(tmp), metadata={"format": "pt"})
        apply_umask(tmp)  # safetensors creates the file 0600
        tmp.replace(path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))

    def _save_base_lm(self, path: Path) -> None:
        if path.exists():
            return  # written by an earlier save (fine-tuned LM weights, if any, are in the weights file)
        base = self.lm.get_base_model()
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        self.lm_backend.save_base(base, state, path, self._lm_config)
        from sslalm.models.folder import apply_umask

        apply_umask(path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SSLALM:
        """Load a folder written by ``save_pretrained``; outputs equal the saved model's.

        Everything is read from the folder itself (``sslalm.models.folder``). A missing or damaged part
        (config, base LM, tokenizer, weights) or an invalid config raises a ``UserError`` naming it, before
        any model is built.
        """
        from sslalm.models.folder import (
            ModelFolderError,
            check_json_files,
            check_model_folder,
            load_weights,
            read_config_dict,
            resolve_part,
        )
        from sslalm.schema import ConfigError

        path = check_model_folder(path)
        try:
            config = SSLALMConfig.from_dict(read_config_dict(path))
        except ConfigError as err:
            raise err.within(str(path / CONFIG_FILE)) from None
        lm = resolve_part(config.lm_checkpoint, path, "lm_checkpoint")
        if lm is not None:
            if not (Path(lm) / CONFIG_FILE).is_file():
                raise ModelFolderError(
                    f"{path / CONFIG_FILE}: lm_checkpoint {lm} is not a language model folder (it has no "
                    f"{CONFIG_FILE})"
                )
            check_json_files(lm, "base language model folder")
        tok = resolve_part(config.tokenizer, path, "tokenizer")
        if tok is not None:
            check_json_files(tok, "tokenizer folder")
        resolve_part(config.encoder_checkpoint, path, "encoder_checkpoint")
        state = load_weights(path / WEIGHTS_FILE)
        model = cls(config, _base_dir=path)
        expected = model.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelFolderError(
                f"{path / WEIGHTS_FILE} does not match {path / CONFIG_FILE}: missing tensors {missing[:5]}, "
                f"unexpected {unexpected[:5]}; the two files come from different models"
            )
        bad_shape = [k for k in state if state[k].shape != expected[k].shape]
        if bad_shape:
            k = bad_shape[0]
            raise ModelFolderError(
                f"{path / WEIGHTS_FILE}: tensor {k!r} has shape {tuple(state[k].shape)}, the config builds "
                f"{tuple(expected[k].shape)}; the weights and config.json come from different models"
            )
        model.load_state_dict(state, strict=False)
        model.lm_backend.check_base_weights(
            model.lm.get_base_model(), f"base language model {lm or '(random)'}"
        )
        return model.eval()
