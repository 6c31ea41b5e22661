"""``sslalm app``: a Gradio page to record or upload a clip, ask a question and read the answer.

The page has an audio input (upload or microphone), a question box with example questions, and sliders for
the generation settings, which start at the defaults of ``sslalm.generation_settings`` (the HTTP API's and
``sslalm ask``'s); the seed starts empty (random). Ask is disabled while its question runs.

Answers go through the same ``ModelService`` as ``sslalm serve``: the event allows ``--max-batch`` handler
threads at once, each following its request in the shared batching engine, so visitors who ask at the same
time share the decode steps, and the answer streams into the page as it is decoded. The upload reaches the
handler as Gradio's file (``type="filepath"``) and is decoded by ``ModelService.decode_bytes``, as the HTTP
API decodes it: a file that is not audio gets the API's one-line message, not Gradio's conversion errors.
Gradio's own queue (``--queue-size``) bounds the waiting visitors and ``--max-upload-mb``
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
import time
from collections.abc import Callable, Iterator
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


def _wave_from_input(service: ModelService, audio: Any) -> Any:
    """The page's audio input -> 16 kHz waveform: a file path from Gradio's upload (read as bytes and decoded
    exactly as the HTTP API decodes an upload, so a file that is not audio gets the same one-line message) or
    a ``(sample_rate, samples)`` pair."""
    if isinstance(audio, (tuple, list)):
        sample_rate, samples = audio
        return service.decode_array(sample_rate, samples)
    path = audio.get("path") if isinstance(audio, dict) else audio
    with open(path, "rb") as f:  # Gradio's own copy of the upload, in its cache folder
        data = f.read(service.limits.max_upload_bytes + 1)
    return service.decode_bytes(data)


def make_handler(
    service: ModelService, error: Callable[[str], Exception] = ValueError
) -> Callable[..., Iterator[tuple[str, str]]]:
    """The function behind the page's button (and the ``/ask`` API endpoint): a generator that yields
    ``(answer so far, details)`` as tokens are decoded, the final pair last.

    ``ask(audio, question, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed)`` takes an
    uploaded file's path or Gradio's ``(sample_rate, samples)`` pair; empty settings take the defaults of
    ``sslalm.generation_settings``; refusals are raised as ``error(message)`` (``gradio.Error`` in the app,
    so the page shows one line) and logged as one line.
    """

    def ask(
        audio: Any,
        question: str,
        max_new_tokens: float | None = None,
        temperature: float | None = None,
        top_k: float | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        seed: float | str | None = None,
    ) -> Iterator[tuple[str, str]]:
        start = time.perf_counter()
        generation = None
        try:
            if audio is None:
                raise RequestError(400, "Upload or record a clip first.")
            question = service.check_question(question)
            if isinstance(seed, float) and math.isnan(seed):
                seed = None
            settings = service.generation_settings(
                {
                    "max_new_tokens": max_new_tokens,
                    "temperature": temperature,
                    "top_k": top_k,
                    "top_p": top_p,
                    "repetition_penalty": repetition_penalty,
                    "seed": seed,
                }
            )
            wave = _wave_from_input(service, audio)  # (num_samples,) 16 kHz float32
            generation = service.start(wave, question, settings)
            known = 0
            while True:
                text, finished = generation.wait_text(known, timeout=1.0)
                if finished:
                    break
                if len(text) > known:
                    known = len(text)
                    yield text, "generating…"
            result = service.result(wave, generation.future.result())
        except RequestError as err:
            service.record_response(err.status)
            logger.info("app ask status=%d: %s", err.status, err.message)
            raise error(err.message) from None
        except GeneratorExit:  # the visitor left or pressed stop
            if generation is not None:
                generation.cancel()
            raise
        except Exception:
            service.record_response(500)
            logger.exception("app ask failed")
            raise
        service.record_response(200)
        details = (
            f"{result.audio_seconds:.2f} s of audio → {result.audio_tokens} audio tokens; "
            f"{result.completion_tokens} tokens ({result.finish_reason}) in "
            f"{(time.perf_counter() - start) * 1000:.0f} ms; decoded beside up to {result.batch_size} "
            f"requests ({result.queue_ms:.0f} ms queued)"
        )
        logger.info(
            "app ask status=200 audio_s=%.2f tokens=%d batch=%d run_ms=%.1f",
            result.audio_seconds, result.completion_tokens, result.batch_size, result.run_ms,
        )  # fmt: skip
        yield result.answer, details

    return ask


def build_app(service: ModelService, title: str = "sslalm: ask about audio") -> Any:
    """A ``gradio.Blocks`` page for ``service`` (not launched).

    Controls start at the defaults of ``sslalm.generation_settings`` (the HTTP API's and ``sslalm ask``'s);
    the seed starts empty (random). The answer streams in; Ask is disabled while a question runs.
    """
    from sslalm.generation_settings import GENERATION_FIELDS, GREEDY_BELOW

    gr = _import_gradio()
    defaults = service.default_generation
    limit = service.limits.max_new_tokens_limit
    # user errors: one line on the page and in the log, no traceback (Gradio prints one unless told not to)
    handler = make_handler(service, error=lambda message: gr.Error(message, print_exception=False))
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"## {title}\nModel `{service.model.config.name}`. Upload or record up to "
            f"{service.limits.max_audio_seconds:g} s of audio, then ask a question. "
            f"Temperature 0 (below {GREEDY_BELOW:g}) = greedy."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="audio", elem_id="audio"
                )
                question = gr.Textbox(
                    label="question", value=EXAMPLE_QUESTIONS[0], lines=2, elem_id="question"
                )
                gr.Examples(
                    examples=[[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="example questions"
                )
                with gr.Accordion("generation settings", open=False):
                    help_ = {name: spec.help for name, spec in GENERATION_FIELDS.items()}
                    max_new = gr.Slider(
                        1, limit, value=defaults["max_new_tokens"], step=1, label="max new tokens",
                        info=help_["max_new_tokens"], elem_id="max_new_tokens",
                    )  # fmt: skip
                    temperature = gr.Slider(
                        0.0, 2.0, value=defaults["temperature"], step=0.05, label="temperature",
                        info=help_["temperature"], elem_id="temperature",
                    )  # fmt: skip
                    top_k = gr.Slider(0, 1000, value=defaults["top_k"], step=1, label="top-k (0 = off)")
                    top_p = gr.Slider(0.05, 1.0, value=defaults["top_p"], step=0.05, label="top-p")
                    penalty = gr.Slider(
                        1.0, 2.0, value=defaults["repetition_penalty"], step=0.05, label="repetition penalty"
                    )
                    # a Textbox, not gr.Number: Gradio shows an empty Number as 0, a fixed seed
                    seed = gr.Textbox(
                        value="", label="seed (empty = random)", placeholder="random", elem_id="seed"
                    )
                button = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="answer", lines=6, elem_id="answer")
                details = gr.Markdown(elem_id="details")
        busy = button.click(lambda: gr.Button(interactive=False), None, button, queue=False)
        busy.then(
            handler,
            inputs=[audio, question, max_new, temperature, top_k, top_p, penalty, seed],
            outputs=[answer, details],
            api_name="ask",
            concurrency_limit=service.limits.max_batch,  # concurrent handlers share the decode batch
        ).then(lambda: gr.Button(interactive=True), None, button, queue=False)
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
    from sslalm.serve.http import load_service

    try:
        _import_gradio()
    except ImportError as err:
        logger.error("%s", err)
        return 1
    service = load_service(args)  # a UserError (a run folder, say) is one line from sslalm.cli, exit 2
    limits = service.limits
    if args.share:
        logger.warning("--share makes the page public through gradio.live")
    signal.signal(signal.SIGTERM, _interrupt)  # Gradio stops cleanly on KeyboardInterrupt; make SIGTERM one
    try:
        launch(build_app(service), limits, host=args.host, port=args.port, share=args.share)
    finally:
        service.close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: a second must not break the shutdown
    raise KeyboardInterrupt
