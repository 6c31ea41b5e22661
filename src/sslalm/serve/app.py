"""``sslalm app``: a Gradio page to record or upload a clip, ask a question and read the answer.

The page has an audio input (upload or microphone), a question box with example questions, and sliders for
the generation settings. Gradio hands the clip over as ``(sample_rate, int16 array)`` of shape (samples,) or
(samples, channels); ``ModelService.decode_array`` scales it to [-1, 1), averages the channels and
resamples to 16 kHz (``sslalm.audio.load_audio`` on the pair), with the same duration limit as the HTTP API.

Answers go through the same ``ModelService`` as ``sslalm serve``: the event allows ``--max-batch`` handler
threads at once, each waiting on the shared ``DynamicBatcher``, so visitors who ask at the same time share
one model call. Gradio's own queue (``--queue-size``) bounds the waiting visitors and ``--max-upload-mb``
bounds uploads. The API endpoint is named after the handler, ``/ask``
(``gradio_client.Client(url).predict(handle_file(wav), question, ..., api_name="/ask")``).

Gradio is optional (``pip install 'sslalm[app]'``) and imported only here; its usage analytics are off
unless ``GRADIO_ANALYTICS_ENABLED`` is set. The page binds 127.0.0.1 unless ``--host`` says otherwise, and
``--share`` (a public gradio.live link) is off by default.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
from collections.abc import Callable
from typing import Any

from sslalm.serve.service import ModelService, RequestError, ServeLimits

logger = logging.getLogger(__name__)

INSTALL_HINT = "the app needs Gradio: pip install 'sslalm[app]'"

EXAMPLE_QUESTIONS = [
    "What can be inferred from the audio?",
    "Close-ended question: Write an audio caption describing the sound.",
    "What sound events can you hear, and in what order?",
    "Is there speech in the recording? Describe the speaker.",
    "What is the mood of the music, and which instruments play?",
]


def _import_gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return gradio


def make_handler(
    service: ModelService, error: Callable[[str], Exception] = ValueError
) -> Callable[..., tuple]:
    """The function behind the page's button (and the ``/ask`` API endpoint).

    ``ask(audio, question, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed)`` takes
    Gradio's ``(sample_rate, samples)`` pair and returns ``(answer, details)``; refusals are raised as
    ``error(message)`` (``gradio.Error`` in the app, so the page shows the message).
    """

    def ask(
        audio: tuple[int, Any] | None,
        question: str,
        max_new_tokens: float = 128,
        temperature: float = 0.1,
        top_k: float = 500,
        top_p: float = 0.95,
        repetition_penalty: float = 1.1,
        seed: float | None = None,
    ) -> tuple[str, str]:
        if audio is None:
            service.record_response(400)
            raise error("Upload or record a clip first.")
        try:
            sample_rate, samples = audio
            wave = service.decode_array(sample_rate, samples)  # (num_samples,) 16 kHz float32
            if seed is not None and isinstance(seed, float) and math.isnan(seed):
                seed = None
            settings = service.generation_settings(
                {
                    "max_new_tokens": int(max_new_tokens),
                    "temperature": temperature,
                    "top_k": int(top_k),
                    "top_p": top_p,
                    "repetition_penalty": repetition_penalty,
                    "seed": None if seed is None else int(seed),
                }
            )
            result = service.ask(wave, service.check_question(question), settings)
        except RequestError as err:
            service.record_response(err.status)
            raise error(err.message) from None
        except Exception:
            service.record_response(500)
            raise
        service.record_response(200)
        details = (
            f"{result.audio_seconds:.2f} s of audio → {result.audio_tokens} audio tokens; "
            f"answered in a batch of {result.batch_size} "
            f"({result.queue_ms:.0f} ms queued, {result.run_ms:.0f} ms run)"
        )
        logger.info(
            "app ask audio_s=%.2f tokens=%d batch=%d run_ms=%.1f",
            result.audio_seconds, result.audio_tokens, result.batch_size, result.run_ms,
        )  # fmt: skip
        return result.answer, details

    return ask


def build_app(service: ModelService, title: str = "sslalm: ask about audio") -> Any:
    """A ``gradio.Blocks`` page for ``service`` (not launched)."""
    gr = _import_gradio()
    defaults = service.default_generation
    limit = service.limits.max_new_tokens_limit
    handler = make_handler(service, error=gr.Error)
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"## {title}\nModel `{service.model.config.name}`. Upload or record up to "
            f"{service.limits.max_audio_seconds:g} s of audio, then ask a question. Temperature 0 = greedy."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="numpy", label="audio")
                question = gr.Textbox(label="question", value=EXAMPLE_QUESTIONS[0], lines=2)
                gr.Examples(
                    examples=[[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="example questions"
                )
                with gr.Accordion("generation settings", open=False):
                    max_new = gr.Slider(
                        1, limit, value=min(128, defaults["max_new_tokens"]), step=1, label="max new tokens"
                    )
                    temperature = gr.Slider(
                        0.0, 2.0, value=defaults["temperature"], step=0.05, label="temperature"
                    )
                    top_k = gr.Slider(0, 1000, value=defaults["top_k"], step=1, label="top-k (0 = off)")
                    top_p = gr.Slider(0.05, 1.0, value=defaults["top_p"], step=0.05, label="top-p")
                    penalty = gr.Slider(
                        1.0, 2.0, value=defaults["repetition_penalty"], step=0.05, label="repetition penalty"
                    )
                    seed = gr.Number(value=None, precision=0, label="seed (empty = random)")
                button = gr.Button("Ask", variant="primary")
            with gr.Column():
                answer = gr.Textbox(label="answer", lines=6)
                details = gr.Markdown()
        button.click(
            handler,
            inputs=[audio, question, max_new, temperature, top_k, top_p, penalty, seed],
            outputs=[answer, details],
            api_name="ask",
            concurrency_limit=service.limits.max_batch,  # concurrent handlers share model calls
        )
    demo.queue(max_size=service.limits.queue_size)
    return demo


def launch(
    demo: Any,
    limits: ServeLimits,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    **kw: Any,
) -> Any:
    """Start the page's server (``prevent_thread_lock=True`` in ``kw`` returns at once)."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=f"{limits.max_upload_mb:g}mb",
        show_error=True,
        **kw,
    )


# ---------------------------------------------------------------------------------------------------- CLI


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sslalm.serve.http import add_limit_arguments

    parser.add_argument(
        "--model", required=True, help="folder written by SSLALM.save_pretrained / sslalm train"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="public gradio.live link (default false)",
    )
    add_limit_arguments(parser)


def run_cli(args: argparse.Namespace) -> int:
    from sslalm.serve.http import limits_from_args, load_model

    try:
        _import_gradio()
    except ImportError as err:
        logger.error("%s", err)
        return 1
    limits = limits_from_args(args)
    service = ModelService(load_model(args.model, args.device), limits)
    if args.share:
        logger.warning("--share makes the page public through gradio.live")
    signal.signal(signal.SIGTERM, _interrupt)  # Gradio stops cleanly on KeyboardInterrupt; make SIGTERM one
    try:
        launch(build_app(service), limits, host=args.host, port=args.port, share=args.share)
    finally:
        service.close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
