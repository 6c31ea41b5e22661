"""Serving a model: an HTTP API (``sslalm serve``) and a Gradio page (``sslalm app``).

* ``continuous.py`` — ``ContinuousBatcher`` + ``MambaDecoder``: requests join and leave the running decode
  batch at every token (Mamba LMs); ``Generation``, a request's streamed progress.
* ``batcher.py`` — ``DynamicBatcher``: a bounded queue and one model thread that forms batches on the fly
  (transformers LMs, or ``--batching dynamic``).
* ``service.py`` — ``ModelService``: the model behind the engine, input limits, ``RequestError``.
* ``http.py`` — FastAPI app (``create_app``, ``server_config``) and the ``sslalm serve`` command.
* ``openai_api.py`` — the OpenAI-compatible routes (chat completions with audio, streaming; models).
* ``guard.py`` — connection guards inside uvicorn: header/body read timeouts, a JSON connection cap.
* ``app.py`` — Gradio page (``build_app``, ``make_handler``) and the ``sslalm app`` command.

FastAPI, uvicorn and Gradio are optional and imported only by the modules that need them.
"""

from sslalm.serve.batcher import BatcherClosed, Completed, DynamicBatcher, QueueFull
from sslalm.serve.continuous import ContinuousBatcher, Finished, Generation, MambaDecoder
from sslalm.serve.service import AskResult, ModelService, RequestError, ServeLimits

__all__ = [
    "AskResult",
    "BatcherClosed",
    "Completed",
    "ContinuousBatcher",
    "Finished",
    "Generation",
    "MambaDecoder",
    "DynamicBatcher",
    "ModelService",
    "QueueFull",
    "RequestError",
    "ServeLimits",
]
