"""``sslalm ask``: answer a question about an audio file with a saved model."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="folder written by SSLALM.save_pretrained / sslalm train"
    )
    parser.add_argument(
        "--audio", required=True, help="audio file (wav, flac, ogg, mp3; any rate, any length)"
    )
    parser.add_argument(
        "--question", required=True, help="the question, e.g. 'What can be inferred from the audio?'"
    )
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.1, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=500)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repetition-penalty", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=None)


def run_cli(args: argparse.Namespace) -> int:
    from sslalm.audio import AudioError
    from sslalm.models.lalm import SSLALM

    model = SSLALM.from_pretrained(args.model)
    try:
        answer = model.ask(
            args.audio,
            args.question,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            do_sample=args.temperature > 0,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            seed=args.seed,
        )
    except AudioError as exc:
        logger.error("%s", exc)
        return 1
    print(answer)
    return 0
