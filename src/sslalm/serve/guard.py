"""Connection-level guards for ``sslalm serve``: read timeouts and a connection cap, inside uvicorn.

Why here and not in uvicorn's settings: uvicorn (0.54) has no timeout for reading a request's headers or
body (a client that sends half a request holds its connection forever), and its ``limit_concurrency``
counts such idle connections, then answers everyone beyond the cap with a plain-text 503 that has no
``Retry-After`` and never reaches the application (so it cannot be counted). ``guarded_protocol`` returns a
subclass of uvicorn's h11 protocol (passed as ``uvicorn.Config(http=...)``) that adds, per connection:

* **header timeout** — from the moment a connection waits for a request, its headers must be complete
  within ``header_timeout_s`` (trickling bytes does not extend it); otherwise 408 (JSON) and close.
* **body timeout** — while a request body is being read, a pause longer than ``body_timeout_s`` between two
  pieces ends it with 408 and close (unless the server itself stopped reading: flow control).
* **connection cap** — a request that arrives while more than ``cap`` connections are open is served by
  ``over_capacity`` instead of the application (and its connection closed): the same JSON 503 with
  ``Retry-After`` that a full queue gets, counted in
  ``/metrics``. ``GET /health`` and ``GET /metrics`` still pass, so monitoring works under load.

* **lingering close** — a request answered before its body ended (413 for an oversized body) is answered at
  once; uvicorn then discards what still arrives, for at most ``LINGER_S``, and the connection closes.
  (Closing
  at once would make TCP reset the connection, and a client still sending would lose the answer.)

Refusals are reported through ``on_refuse(kind, status)``. Everything else is uvicorn's own code path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

PASS_THROUGH = ("/health", "/metrics")  # GET paths served even over the cap
LINGER_S = 2.0  # after answering a request whose body is still coming, read on (discarding) this long at most


def json_response_bytes(status: int, reason: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response with a JSON body and ``Connection: close`` (written by the guard)."""
    data = json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()] + ["connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + data


def guarded_protocol(
    header_timeout_s: float,
    body_timeout_s: float,
    cap: int,
    over_capacity: Callable[..., Any],
    error_body: Callable[[str, int, str], dict[str, Any]],
    on_refuse: Callable[[str, int | None], None] = lambda kind, status: None,
) -> type:
    """An ``H11Protocol`` subclass with the guards above.

    Args:
        over_capacity: the ASGI app that answers requests on connections beyond the cap.
        error_body: ``(path, status, message) -> JSON body`` (the API's error format for that path).
        on_refuse: called with ("header_timeout" | "body_timeout" | "over_capacity", status or None
            when the connection was closed without an answer).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer: Any = None
            self._body_timer: Any = None
            self._bytes_this_request = 0
            real_app, connections = self.app, self.connections

            async def app(scope: dict, receive: Any, send: Any) -> None:
                over = len(connections) > cap
                if over and not (scope.get("method") == "GET" and scope.get("path") in PASS_THROUGH):
                    await over_capacity(scope, receive, send)
                else:
                    await real_app(scope, receive, send)

            self.app = app
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._bytes_this_request += len(data)
            super().data_received(data)
            self._update_timers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                # answered before the body ended (413): uvicorn discards the rest; close after LINGER_S
                self.loop.call_later(LINGER_S, self._end_linger)
            self._update_timers()

        def _end_linger(self) -> None:
            if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
                self.transport.close()

        # ---------------------------------------------------------------- timers
        def _cancel_timers(self) -> None:
            for name in ("_header_timer", "_body_timer"):
                timer = getattr(self, name, None)
                if timer is not None:
                    timer.cancel()
                    setattr(self, name, None)

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._bytes_this_request = (
                    0 if self.conn.their_state is h11.IDLE else self._bytes_this_request
                )
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _arm_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(body_timeout_s, self._body_timeout)

        def _update_timers(self) -> None:
            if self.transport is None or self.transport.is_closing():
                self._cancel_timers()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self.cycle is None or self.cycle.response_complete:
                    self._arm_header_timer()
                return
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            if state is h11.SEND_BODY:
                self._arm_body_timer()
            elif self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _refuse(self, kind: str, message: str) -> None:
            started = (
                self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
            )
            path = (
                self.scope["path"] if (self.scope and self.cycle and not self.cycle.response_complete) else ""
            )
            if not started and (self._bytes_this_request or kind == "body_timeout"):
                body = error_body(path, 408, message)
                self.transport.write(json_response_bytes(408, "Request Timeout", body, {}))
                on_refuse(kind, 408)
            else:
                on_refuse(kind, None)
            logger.info("closing connection from %s: %s", self.client, message)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # still answering the previous request (pipelining): not the client's delay
            self._refuse("header_timeout", f"request headers not complete within {header_timeout_s:g} s")

        def _body_timeout(self) -> None:
            self._body_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused:
                self._arm_body_timer()  # the server stopped reading (back-pressure): not the client's stall
                return
            if self.cycle is not None and self.cycle.response_complete:
                self.transport.close()  # answered already; the rest of the body is not coming
                return
            self._refuse("body_timeout", f"no request body data for {body_timeout_s:g} s")

    return GuardedH11Protocol
