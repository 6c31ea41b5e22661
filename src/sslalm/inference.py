"""``sslalm ask``: answer a question about an audio file with a saved model.

The generation settings, their defaults and ranges come from ``sslalm.generation_settings`` (the table the
server uses too); the audio is refused beyond ``--max-audio-seconds`` (600 s by default, as the server),
checked from the file's header before decoding. Every bad input is a ``UserError``: the ``sslalm`` command
prints it as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging

from sslalm.generation_settings import GENERATION_FIELDS, MAX_AUDIO_SECONDS

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="folder written by SSLALM.save_pretrained / sslalm train"
    )
    parser.add_argument("--audio", required=True, help="audio file (wav, flac, ogg, mp3; any rate)")
    parser.add_argument(
        "--question", required=True, help="the question, e.g. 'What can be inferred from the audio?'"
    )
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed"):
        spec = GENERATION_FIELDS[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=str,  # parsed and range-checked by validate_generation, which names the setting
            default=spec.default,
            metavar="N" if spec.kind is int else "X",
            help=f"{spec.help} (default {spec.default})",
        )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=MAX_AUDIO_SECONDS,
        help=f"refuse longer audio (default {MAX_AUDIO_SECONDS:g} s, as sslalm serve); 0 = no limit",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def run_cli(args: argparse.Namespace) -> int:
    from sslalm.audio import load_audio
    from sslalm.generation_settings import validate_generation, validate_question
    from sslalm.models.loading import check_model_folder, load_model

    # everything the user typed is checked before the model is loaded
    settings = validate_generation(
        {
            name: getattr(args, name)
            for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
        }
    )
    settings.setdefault("do_sample", settings.get("temperature", 1.0) > 0)
    question = validate_question(args.question)
    check_model_folder(args.model)  # a wrong path is named before any audio is decoded
    limit = args.max_audio_seconds if args.max_audio_seconds and args.max_audio_seconds > 0 else None
    wave = load_audio(args.audio, max_seconds=limit, limit_hint="--max-audio-seconds")
    model = load_model(args.model, args.device)
    print(model.ask(wave, question, **settings))
    return 0


class DurationLimited:
    """A model whose ``generate`` decodes audio files with a duration limit first (``sslalm eval``'s
    ``--max-audio-seconds``, the same default as ``ask`` and the server). A clip over the limit raises an
    ``AudioError`` that names the limit and the flag; waveform tensors pass through unchanged."""

    def __init__(self, model, max_seconds: float | None, hint: str = "--max-audio-seconds"):
        self.model = model
        self.max_seconds = max_seconds
        self.hint = hint

    def generate(self, audios: list, prompts: list[str], /, **generation) -> list[str]:
        from sslalm.audio import load_audio

        waves = [
            a
            if not isinstance(a, (str, bytes)) and not hasattr(a, "__fspath__")
            else load_audio(a, max_seconds=self.max_seconds, limit_hint=self.hint)
            for a in audios
        ]
        return self.model.generate(waves, prompts, **generation)

    def __getattr__(self, name: str):
        return getattr(self.model, name)
