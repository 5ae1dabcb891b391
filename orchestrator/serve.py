"""`odorch serve`: a local endpoint that speaks SageMaker's serving contract with the handler
the cloud endpoint runs (entrypoints/inference.py).

    GET  /ping         200 once the model is loaded (it is loaded before the server listens)
    POST /invocations  Content-Type and Accept as entrypoints/inference.py documents them

The model is loaded once with ``model_fn``; each request runs ``input_fn`` (decoding),
``predict_fn`` and ``output_fn``. Requests are served on threads; the forward pass takes a
lock (one at a time: on a CPU, torch already spreads one pass over the cores, and an OpenVINO
model shares one infer request), so decoding and serialization overlap but passes do not.

A RequestError answers with its status code and message (400, 406, 413, 415); a body without
Content-Length gets 411, one over the size limit 413 before any of it is read; anything else
that fails answers 500 and its traceback goes to stderr. At most MAX_THREADS connections are
served at once (more get 503 at once); a connection still open REQUEST_DEADLINE_S after it was
accepted (a client dripping its headers or body, however slowly) is closed.
"""

from __future__ import annotations

import socket
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_TIMEOUT_S = 30.0  # a client that stops sending mid-body loses its thread after this
MAX_THREADS = 16  # connections served at once
REQUEST_DEADLINE_S = 300.0  # a whole request: headers, body, prediction and reply


class ModelServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the handler's loaded model and the body size limit."""

    daemon_threads = True  # Ctrl-C does not wait for requests in flight

    def __init__(
        self,
        address: tuple[str, int],
        model: dict[str, Any],
        *,
        max_body: int,
        max_threads: int = MAX_THREADS,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self.model = model
        self.max_body = max_body
        self.deadline_s = deadline_s
        self.lock = threading.Lock()
        self.max_threads = max_threads
        self.slots = threading.BoundedSemaphore(max_threads)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection while a slot is free; otherwise 503 now, from the accepting thread."""
        if not self.slots.acquire(blocking=False):
            body = b"busy: too many requests in flight; retry\n"
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            finally:
                self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection under a watchdog that closes it at the deadline; free its slot."""
        watchdog = threading.Timer(self.deadline_s, _close, args=(request,))
        watchdog.daemon = True
        watchdog.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            watchdog.cancel()
            watchdog.join()
            self.slots.release()

    def stop(self, *, grace_s: float) -> int:
        """Stop listening and wait up to ``grace_s`` for the requests in flight; return how many are
        still running. A thread still inside torch when the interpreter exits can abort it
        ("terminate called without an active exception", pytorch/pytorch#38228), so a caller that
        gets a non-zero count should leave with ``os._exit``."""
        self.server_close()
        deadline = time.monotonic() + grace_s
        held = 0
        while held < self.max_threads and self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held += 1
        return self.max_threads - held

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"


def _close(connection: socket.socket) -> None:
    """Wake any read or write blocked on the connection; its thread then finishes."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    timeout = READ_TIMEOUT_S
    server_version = "odorch-serve"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/ping":
            self._reply(HTTPStatus.NOT_FOUND, b"not found: GET /ping or POST /invocations\n")
            return
        self._reply(HTTPStatus.OK, b"")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/invocations":
            self._reply(HTTPStatus.NOT_FOUND, b"not found: GET /ping or POST /invocations\n")
            return
        body = self._read_body()
        if body is None:
            return
        from odorch.runtime.inference import RequestError, input_fn, output_fn, predict_fn

        try:
            request = input_fn(body, self.headers.get("Content-Type", ""))
            with self.server.lock:
                prediction = predict_fn(request, self.server.model)
            out = output_fn(prediction, self.headers.get("Accept", ""))
        except RequestError as e:
            self._reply(e.status_code, f"{e.message}\n".encode())
            return
        except Exception as e:  # noqa: BLE001 - the client gets a 500, the log the traceback
            traceback.print_exc()
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}\n".encode())
            return
        self._reply(HTTPStatus.OK, out, content_type="application/json")

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411, 413 or 400 (without reading it) or 408."""
        if self.headers.get("Transfer-Encoding"):
            self._reply(HTTPStatus.LENGTH_REQUIRED, b"send the body with a Content-Length (no chunked encoding)\n")
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(HTTPStatus.LENGTH_REQUIRED, b"a POST /invocations needs a Content-Length\n")
            return None
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            self._reply(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}\n".encode())
            return None
        if size > self.server.max_body:
            limit = self.server.max_body / 2**20
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body of {size} bytes is over the limit of {limit:g} MB (odorch serve --max-body-mb)\n".encode())
            return None
        try:
            body = self.rfile.read(size)
        except TimeoutError:
            self._reply(HTTPStatus.REQUEST_TIMEOUT, f"no body bytes for {READ_TIMEOUT_S:g} s\n".encode())
            return None
        if len(body) < size:
            self._reply(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {size} bytes\n".encode())
            return None
        return body

    def _reply(self, status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_server(model_dir: Path, *, host: str = "127.0.0.1", port: int = 8080, max_body_mb: float = 10.0,
                device: str | None = None, max_threads: int | None = None, deadline_s: float | None = None,
                max_images: int | None = None, max_pixels: int | None = None) -> ModelServer:
    """Load the model of ``model_dir`` as the handler's ``model_fn`` does (on ``device``; None: the
    handler's choice) and bind (port 0: a free port); ``serve_forever()`` then serves it.

    `max_images` / `max_pixels` replace the handler's ODORCH_MAX_IMAGES / ODORCH_MAX_PIXELS for this
    process (None: the environment's), and its 413 messages then name the --max-* flags;
    `max_threads` / `deadline_s` None: MAX_THREADS / REQUEST_DEADLINE_S."""
    from odorch.runtime import inference

    inference.set_request_limits(max_images=max_images, max_pixels=max_pixels,
                                 names={"images": "--max-images", "pixels": "--max-pixels"})
    model = inference.load_handler_model(str(model_dir), device=device)
    return ModelServer((host, port), model, max_body=int(max_body_mb * 2**20),
                       max_threads=MAX_THREADS if max_threads is None else max_threads,
                       deadline_s=REQUEST_DEADLINE_S if deadline_s is None else deadline_s)
