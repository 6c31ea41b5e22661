"""The SSLALM processor: everything between raw inputs and the model's tensors, in one place.

Like a transformers audio processor it pairs a feature extractor with a tokenizer:

* audio -> fbank: ``training_features`` turns a (cropped) 16 kHz waveform into the fixed-size
  (``train_frames``, 128) training input (1024 frames = 10.24 s, zero-padded); ``inference_features`` turns a
  whole clip (path, bytes or waveform) into (T, 128), padding clips shorter than ``min_inference_frames``
  exactly as in training and keeping longer ones whole;
* text -> token ids through the alpaca-short template of ``sslalm.prompt``: ``prompt_ids`` for a question at
  inference, ``text_example`` for a training question + answer (cut at ``cutoff_len``, EOS, loss masking);
* ``training_example`` (waveform + record -> one example) and ``collate`` / ``__call__`` (examples -> a
  right-padded batch), so a processor is a ``data_collator`` as it is;
* ``decode``: generated ids -> answer text.

It is derived from the model's config and tokenizer (``SSLALM.processor``); ``from_pretrained(model_dir)``
rebuilds it from a model folder (``config.json`` + ``tokenizer/``) without loading any weights, and
``save_pretrained`` writes ``tokenizer/`` and ``processor_config.json`` for a processor kept on its own.
Training, ``SSLALM.generate``/``ask`` (and through them evaluation and serving) and the demo use it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sslalm.prompt import CUTOFF_LEN, build_prompt, collate, tokenize_example

Tensor = torch.Tensor

PROCESSOR_CONFIG_FILE = "processor_config.json"
MODEL_CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


class SSLALMProcessor:
    """Fbank features, prompt template, tokenisation and collation for one SSLALM. See the module docstring.

    Args:
        tokenizer: the LM's Hugging Face tokenizer (with EOS and pad ids).
        train_frames: frames of a training example (the crop length; 1024 = 10.24 s).
        min_inference_frames: shorter clips are padded to this many frames at inference.
        cutoff_len, train_on_inputs: text cut and loss masking of training examples
            (``sslalm.prompt.tokenize_example``).
        pad_to_multiple_of: round a batch's text length up to a multiple of this.
        feature_extractor: the training-crop extractor (waveform -> (train_frames, 128)); by default
            ``sslalm.audio.FbankExtractor(target_length=train_frames)``.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_frames: int = 1024,
        min_inference_frames: int = 1024,
        cutoff_len: int = CUTOFF_LEN,
        train_on_inputs: bool = True,
        pad_to_multiple_of: int | None = None,
        feature_extractor: Any = None,
    ):
        from sslalm.audio import SAMPLE_RATE, FbankExtractor

        self.tokenizer = tokenizer
        self.train_frames = train_frames
        self.min_inference_frames = min_inference_frames
        self.cutoff_len = cutoff_len
        self.train_on_inputs = train_on_inputs
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sample_rate = SAMPLE_RATE
        if feature_extractor is None:
            feature_extractor = FbankExtractor(target_length=train_frames)
        self.feature_extractor = feature_extractor  # training crops
        self._whole = FbankExtractor(target_length=None)
        self._padded = FbankExtractor(target_length=min_inference_frames)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, **text_settings: Any) -> SSLALMProcessor:
        """The processor of a model with this ``SSLALMConfig`` and tokenizer; ``text_settings`` are
        ``cutoff_len``, ``train_on_inputs`` and ``pad_to_multiple_of`` (training-stage settings)."""
        return cls(tokenizer, config.train_frames, config.min_inference_frames, **text_settings)

    def with_text_settings(self, **text_settings: Any) -> SSLALMProcessor:
        """A copy with other ``cutoff_len`` / ``train_on_inputs`` / ``pad_to_multiple_of`` (a stage's)."""
        unknown = set(text_settings) - {"cutoff_len", "train_on_inputs", "pad_to_multiple_of"}
        if unknown:
            raise TypeError(f"not a text setting: {sorted(unknown)}")
        out = copy.copy(self)
        for name, value in text_settings.items():
            setattr(out, name, value)
        return out

    # ------------------------------------------------------------------ audio
    def training_features(self, waveform: Tensor) -> Tensor:
        """A 16 kHz waveform (N,) (already cropped) -> (train_frames, 128) normalised fbank."""
        return self.feature_extractor(waveform, sample_rate=self.sample_rate)

    def inference_features(self, audio: Any) -> Tensor:
        """A whole clip (path, bytes or 16 kHz waveform) -> (T, 128); shorter than ``min_inference_frames``
        is padded as in training, longer is kept whole (32 audio tokens per 10.24 s)."""
        from sslalm.audio import load_audio

        wav = audio if isinstance(audio, torch.Tensor) else load_audio(audio, self.sample_rate)
        if self._whole.num_frames(wav.numel()) < self.min_inference_frames:
            return self._padded(wav)
        return self._whole(wav)

    def inference_frames(self, num_samples: int) -> int:
        """Frames ``inference_features`` gives for a clip of ``num_samples`` (16 kHz), without computing them
        (``SSLALM.num_audio_tokens`` of it is the clip's audio-token count)."""
        return max(self._whole.num_frames(num_samples), self.min_inference_frames)

    # ------------------------------------------------------------------ text
    def prompt_ids(self, question: str, input: str = "") -> list[int]:
        """Token ids of the template around ``question`` (what the answer is generated after)."""
        return list(self.tokenizer(build_prompt(question, input))["input_ids"])

    def text_example(self, instruction: str, input: str, output: str) -> dict[str, list[int]]:
        """``input_ids``, ``attention_mask``, ``labels`` of a training question + answer."""
        return tokenize_example(
            self.tokenizer, instruction, input, output, self.cutoff_len, self.train_on_inputs
        )

    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids -> the answer text (special tokens dropped, whitespace stripped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ examples and batches
    def training_example(
        self, waveform: Tensor, instruction: str, input: str, output: str
    ) -> dict[str, Tensor]:
        """One training example: ``fbank`` (train_frames, 128) and the text's int64 (L,) tensors."""
        text = self.text_example(instruction, input, output)
        fbank = self.training_features(waveform)
        return {"fbank": fbank, **{k: torch.tensor(v, dtype=torch.long) for k, v in text.items()}}

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Examples -> a right-padded batch (``sslalm.prompt.collate`` with the tokenizer's pad id)."""
        return collate(examples, self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    __call__ = collate

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict[str, Any]:
        return {
            "train_frames": self.train_frames,
            "min_inference_frames": self.min_inference_frames,
            "cutoff_len": self.cutoff_len,
            "train_on_inputs": self.train_on_inputs,
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "sample_rate": self.sample_rate,
        }

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer/`` and ``processor_config.json`` to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
        (path / PROCESSOR_CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **text_settings: Any) -> SSLALMProcessor:
        """A processor saved by ``save_pretrained``, or the processor of a model folder (its ``config.json``
        and tokenizer; no weights are read). ``text_settings`` override the saved ones."""
        from sslalm.tokenizer import load_tokenizer

        path = Path(path)
        if (path / PROCESSOR_CONFIG_FILE).is_file():
            saved = json.loads((path / PROCESSOR_CONFIG_FILE).read_text())
            sample_rate = saved.pop("sample_rate", None)
            processor = cls(load_tokenizer(str(path / TOKENIZER_DIR)), **{**saved, **text_settings})
            if sample_rate is not None and sample_rate != processor.sample_rate:
                raise ValueError(
                    f"{path}: processor for {sample_rate} Hz, this sslalm reads {processor.sample_rate}"
                )
            return processor
        if not (path / MODEL_CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{path} has neither {PROCESSOR_CONFIG_FILE} nor a model's {MODEL_CONFIG_FILE}"
            )
        from sslalm.models.lalm_config import SSLALMConfig

        config = SSLALMConfig.from_dict(json.loads((path / MODEL_CONFIG_FILE).read_text()))
        if config.tokenizer is None:
            raise ValueError(f"{path}: the model's config names no tokenizer folder")
        tok_path = Path(config.tokenizer)
        if not tok_path.is_absolute() and (path / tok_path).exists():
            tok_path = path / tok_path
        return cls.from_config(config, load_tokenizer(str(tok_path)), **text_settings)
