"""The audio language model: audio encoder -> projector -> language model (+ LoRA through peft).

``SSLALM`` composes the paper's ssLALM (DASS + Mamba-2.8B) and its comparison systems from one config:

* encoder: our DASS (``sslalm.models.dass``) or transformers' AST (LTU-style baseline; long audio is encoded
  in 1024-frame windows, since AST's positional embedding has a fixed size);
* projector (``sslalm.models.projector``): the paper's Conv2d + Linear, or LTU's frequency-mean + pooling;
* language model: our Mamba (``sslalm.models.mamba``) or any transformers causal LM (LLaMA for Hybrid-LALM);
  LoRA adapters through peft on configurable target modules.

Audio tokens come first, then the alpaca-short prompt (``sslalm.prompt``). Training batches are right-padded
(a recurrent LM has no attention mask; pads after the text never reach the state that matters). Labels cover
the text; audio positions get -100 here.

``save_pretrained`` writes ``config.json``, the trainable weights only (encoder, projector, LoRA) in
``model.safetensors``, the tokenizer, and a pointer to the base LM checkpoint. A base LM built from random
weights (tiny presets) has no checkpoint to point at, so it is written once to ``base_lm/``.
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

from sslalm.models.ast import ASTEncoder
from sslalm.models.lalm_config import (  # noqa: F401  (re-exported)
    ADAPTER_PARTS,
    LLAMA_7B,
    PARTS,
    PRESETS,
    TINY_AST,
    TINY_LLAMA,
    SSLALMConfig,
)
from sslalm.models.projector import ConvProjector, PoolProjector

logger = logging.getLogger(__name__)
Tensor = torch.Tensor

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
BASE_LM_DIR = "base_lm"


# ----------------------------------------------------------------------------------------------------------
# encoders


def build_encoder(config: SSLALMConfig) -> nn.Module:
    if config.encoder_type == "dass":
        from sslalm.models.dass import DASSConfig, DASSModel

        encoder = DASSModel(DASSConfig.from_dict(config.encoder_config))
        encoder.classifier.head = nn.Identity()  # the LALM reads the map; the AudioSet head is unused
        return encoder
    if config.encoder_type == "ast":
        return ASTEncoder(config.encoder_config)
    raise ValueError(f"unknown encoder_type {config.encoder_type!r} (use 'dass' or 'ast')")


def encoder_output_size(encoder: nn.Module, config: SSLALMConfig, frames: int) -> tuple[int, int]:
    """(freq, time) size of the encoder map for ``frames`` input frames."""
    if config.encoder_type == "dass":
        return encoder.output_size(128), encoder.output_size(frames)
    return encoder.output_size(frames)


# ----------------------------------------------------------------------------------------------------------
# language models


def _resolve_vocab(lm_config: dict[str, Any], tokenizer_size: int | None, key: str) -> dict[str, Any]:
    cfg = dict(lm_config)
    if cfg.get(key) == "auto":
        if tokenizer_size is None:
            raise ValueError("lm_config vocab_size is 'auto' but the model has no tokenizer")
        cfg[key] = -(-tokenizer_size // 8) * 8
    return cfg


def build_language_model(
    config: SSLALMConfig, tokenizer_size: int | None, base_dir: Path | None
) -> nn.Module:
    """The base (un-adapted) language model: from its checkpoint if the config names one, else random."""
    checkpoint = _resolve(config.lm_checkpoint, base_dir)
    if config.lm_type == "mamba":
        from sslalm.models.mamba import MambaConfig, MambaLM

        if checkpoint is not None:
            return MambaLM.from_pretrained(checkpoint)
        return MambaLM(MambaConfig.from_dict(_resolve_vocab(config.lm_config, tokenizer_size, "vocab_size")))
    if config.lm_type == "hf":
        from transformers import AutoConfig, AutoModelForCausalLM

        if checkpoint is not None:
            return AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True)
        cfg = _resolve_vocab(config.lm_config, tokenizer_size, "vocab_size")
        hf_config = AutoConfig.for_model(**cfg)
        return AutoModelForCausalLM.from_config(hf_config)
    raise ValueError(f"unknown lm_type {config.lm_type!r} (use 'mamba' or 'hf')")


def _resolve(path: str | None, base_dir: Path | None, field: str = "part") -> str | None:
    """A config path: inside the model folder ``base_dir`` when the model was loaded from one (never the
    working directory; a missing part raises ``ModelFolderError``), else as given."""
    from sslalm.models.folder import resolve_part

    return resolve_part(path, base_dir, field)


# ----------------------------------------------------------------------------------------------------------
# the model


class SSLALM(nn.Module):
    """Audio encoder + projector + language model with LoRA. See the module docstring."""

    def __init__(self, config: SSLALMConfig, tokenizer: Any = None, _base_dir: Path | None = None):
        super().__init__()
        self.config = config
        self._tokenizer = tokenizer
        self._base_dir = _base_dir
        meta = torch.empty(0).device.type == "meta"
        tok_size = None
        if not meta and (
            tokenizer is not None or config.tokenizer is not None or config.name.startswith("tiny")
        ):
            tok_size = len(self.tokenizer)
        self.encoder = build_encoder(config)
        if config.encoder_checkpoint is not None and not meta:
            self._load_encoder_checkpoint(_resolve(config.encoder_checkpoint, _base_dir))
        base = build_language_model(config, tok_size, _base_dir)
        d_lm = base.get_input_embeddings().weight.shape[1]
        c_enc = self.encoder.hidden_size
        if config.projector_type == "conv":
            self.projector = ConvProjector(
                c_enc, d_lm, config.projector_kernel, config.projector_stride, config.projector_padding
            )
        elif config.projector_type == "pool":
            self.projector = PoolProjector(c_enc, d_lm, config.projector_time_pool)
        else:
            raise ValueError(f"unknown projector_type {config.projector_type!r} (use 'conv' or 'pool')")
        self.lm = self._add_lora(base)
        self.set_trainable(ADAPTER_PARTS)

    # ------------------------------------------------------------------ construction helpers
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

    def _load_encoder_checkpoint(self, path: str) -> None:
        if self.config.encoder_type == "dass":
            from sslalm.models.dass import DASSModel

            loaded = DASSModel.from_checkpoint(path, strict=False)
            state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("classifier.head")}
            self.encoder.load_state_dict(state, strict=True)
        else:
            from transformers import ASTModel

            self.encoder.model = ASTModel.from_pretrained(path, local_files_only=True)
        logger.info("loaded %s encoder weights from %s", self.config.encoder_type, path)

    @property
    def tokenizer(self) -> Any:
        """The LM's tokenizer: the config's folder, or a byte-level one for tiny presets without one."""
        if self._tokenizer is None:
            from sslalm.tokenizer import build_byte_tokenizer, load_tokenizer

            path = _resolve(self.config.tokenizer, self._base_dir, "tokenizer")
            if path is not None:
                self._tokenizer = load_tokenizer(path)
            elif self.config.name.startswith("tiny"):
                self._tokenizer = build_byte_tokenizer([], vocab_size=258)
            else:
                from sslalm.errors import UserError

                raise UserError(
                    "this model has no tokenizer: set SSLALMConfig.tokenizer to a local tokenizer folder "
                    "(GPT-NeoX's for Mamba checkpoints, LLaMA's for LLaMA)"
                )
        return self._tokenizer

    @property
    def feature_extractor(self) -> Any:
        """The training-crop fbank extractor (``train_frames`` frames, 1024 = 10.24 s)."""
        from sslalm.audio import FbankExtractor

        return FbankExtractor(target_length=self.config.train_frames)

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
        if isinstance(self.encoder, ASTEncoder):
            self.encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs)
        else:
            self.encoder.gradient_checkpointing = True
        base = self.lm.get_base_model()
        if hasattr(base, "gradient_checkpointing_enable"):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        if isinstance(self.encoder, ASTEncoder):
            self.encoder.model.gradient_checkpointing_disable()
        else:
            self.encoder.gradient_checkpointing = False
        base = self.lm.get_base_model()
        if hasattr(base, "gradient_checkpointing_disable"):
            base.gradient_checkpointing_disable()

    # ------------------------------------------------------------------ forward
    def num_audio_tokens(self, num_frames: int) -> int:
        freq, time = encoder_output_size(self.encoder, self.config, num_frames)
        return self.projector.num_tokens(freq, time)

    def encode_audio(self, fbank: Tensor) -> Tensor:
        """(B, T, 128) fbank -> (B, N_audio, d_lm) audio tokens (time-major)."""
        return self.projector(self.encoder.forward_features(fbank))

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
    def _inference_fbank(self, audio: Any) -> Tensor:
        """Whole-clip fbank (frames, 128); clips under ``min_inference_frames`` are padded as in training."""
        from sslalm.audio import FbankExtractor, load_audio

        wav = audio if isinstance(audio, torch.Tensor) else load_audio(audio)
        full = FbankExtractor(target_length=None)
        if full.num_frames(wav.numel()) < self.config.min_inference_frames:
            return FbankExtractor(target_length=self.config.min_inference_frames)(wav)
        return full(wav)

    def _prompt_embeddings(self, audios: list[Any], prompts: list[str]) -> tuple[list[Tensor], list[int]]:
        from sslalm.prompt import build_prompt

        seqs = []
        for audio, prompt in zip(audios, prompts, strict=True):
            fbank = self._inference_fbank(audio).to(self.device)[None]  # (1, T, 128)
            audio_tokens = self.encode_audio(fbank)[0]  # (Na, d)
            ids = self.tokenizer(build_prompt(prompt))["input_ids"]
            text = self.embed_tokens(torch.tensor(ids, device=self.device))  # (Lt, d)
            seqs.append(torch.cat([audio_tokens.to(text.dtype), text]))
        return seqs, [s.shape[0] for s in seqs]

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
            seqs, lengths = self._prompt_embeddings(audios, prompts)
            if self.config.lm_type == "mamba":
                ids = self._generate_mamba(seqs, lengths, gen)
            else:
                ids = self._generate_hf(seqs, lengths, gen)
        finally:
            self.train(was_training)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in ids]

    def _generate_mamba(self, seqs: list[Tensor], lengths: list[int], gen: Any) -> list[list[int]]:
        from sslalm.generate import generate

        embeds = nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # right-padded (B, L, d)
        out = generate(self.lm, inputs_embeds=embeds, lengths=torch.tensor(lengths), config=gen)
        return out.tolist()

    def _generate_hf(self, seqs: list[Tensor], lengths: list[int], gen: Any) -> list[list[int]]:
        if gen.seed is not None:
            if not gen.greedy and len(seqs) > 1:  # transformers samples from one global RNG: go row by row
                return [self._generate_hf([s], [n], gen)[0] for s, n in zip(seqs, lengths)]
            torch.manual_seed(gen.seed)
        longest = max(lengths)
        d = seqs[0].shape[1]
        embeds = seqs[0].new_zeros(len(seqs), longest, d)
        mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=embeds.device)
        for i, s in enumerate(seqs):  # left padding: the attention mask hides it
            embeds[i, longest - s.shape[0] :] = s
            mask[i, longest - s.shape[0] :] = 1
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, **gen.hf_kwargs())
        rows = []
        for row in out.tolist():
            if gen.eos_token_id in row:
                row = row[: row.index(gen.eos_token_id)]
            rows.append(row)
        return rows

    def ask(self, audio: Any, question: str, **generation: Any) -> str:
        """The answer to one question about one clip (path, bytes or 16 kHz waveform)."""
        return self.generate([audio], [question], **generation)[0]

    # ------------------------------------------------------------------ save / load
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Encoder, projector and LoRA weights (what fine-tuning changes), detached and contiguous; the base
        LM's weights too once it was fine-tuned (``config.train_lm``)."""
        groups = self.parameter_groups()
        parts = PARTS if self.config.train_lm else ADAPTER_PARTS
        out = {n: p for part in parts for n, p in groups[part]}
        for name, buf in self.named_buffers():
            if name.startswith(("encoder.", "projector.")):
                out[name] = buf
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def save_pretrained(self, path: str | Path) -> None:
        """Write config, trainable weights (safetensors), tokenizer and, if random, the base LM.

        The folder loads from itself alone (``sslalm.models.folder``): a random base LM is written to
        ``base_lm/`` (or linked from the model folder it was loaded from), a pretrained one outside the
        folder is pointed at by absolute path. Files get the usual permissions (``0666 & ~umask``).
        """
        from safetensors.torch import save_file

        from sslalm.models.folder import apply_umask, copy_tree_linked, is_saved_base_lm, pointer, same_tree

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        source = _resolve(config["lm_checkpoint"], self._base_dir, "lm_checkpoint")
        base_lm = path / BASE_LM_DIR
        if source is None:
            self._save_base_lm(base_lm)
            config["lm_checkpoint"] = BASE_LM_DIR
        elif is_saved_base_lm(source, BASE_LM_DIR):  # another model folder's random base LM: bring it along
            if not same_tree(source, base_lm):
                if base_lm.exists():  # a different model's, from an earlier save into this folder
                    shutil.rmtree(base_lm)
                copy_tree_linked(source, base_lm)
                apply_umask(base_lm)
            config["lm_checkpoint"] = BASE_LM_DIR
        else:
            config["lm_checkpoint"] = pointer(source, path)
        config["encoder_checkpoint"] = None  # the encoder's weights are in model.safetensors
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
        if self.config.lm_type == "mamba":
            from sslalm.models.mamba import MambaLM

            with torch.device("meta"):
                clean = MambaLM(base.config)
            clean.load_state_dict(state, strict=True, assign=True)
            clean.tie_weights()
            clean.save_pretrained(path)
        else:
            base.save_pretrained(str(path), state_dict=state)
        from sslalm.models.folder import apply_umask

        apply_umask(path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SSLALM:
        """Load a folder written by ``save_pretrained``; outputs equal the saved model's.

        Everything is read from the folder itself (``sslalm.models.folder``). A missing or damaged part
        (config, base LM, tokenizer, weights) or an invalid config raises a ``UserError`` naming it, before
        any model is built.
        """
        from sslalm.models.folder import check_json_files, load_weights, read_config_dict, resolve_part
        from sslalm.models.loading import ModelFolderError, check_model_folder
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
        if config.lm_type == "hf":  # transformers loads the base LM without looking at its values
            from sslalm.models.mamba_config import check_finite

            base = model.lm.get_base_model()
            check_finite(dict(base.named_parameters()), f"base language model {lm or '(random)'}")
        return model.eval()
