"""Serving a model: an HTTP API (``sslalm serve``) and a Gradio page (``sslalm app``).

* ``batcher.py`` — ``DynamicBatcher``: a bounded queue and one model thread that forms batches on the fly.
* ``service.py`` — ``ModelService``: the model behind the batcher, input limits, ``RequestError``.
* ``http.py`` — FastAPI app (``create_app``) and the ``sslalm serve`` command.
* ``app.py`` — Gradio page (``build_app``, ``make_handler``) and the ``sslalm app`` command.

FastAPI, uvicorn and Gradio are optional and imported only by the modules that need them.
"""

from sslalm.serve.batcher import BatcherClosed, Completed, DynamicBatcher, QueueFull
from sslalm.serve.service import AskResult, ModelService, RequestError, ServeLimits

__all__ = [
    "AskResult",
    "BatcherClosed",
    "Completed",
    "DynamicBatcher",
    "ModelService",
    "QueueFull",
    "RequestError",
    "ServeLimits",
]
