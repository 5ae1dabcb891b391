"""`odorch serve --max-pixels / --max-images / --threads / --deadline`, run as a user runs it (a
child process on a free port): each flag changes what the server does, and the 413 messages name
the flag to raise (ODORCH_MAX_* stay the way to set them in the SageMaker container)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import default_sigint

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with OPENER.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _post_when_free(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    """_post, again while the server answers 503: with --threads 1 the previous request's slot is
    freed by its thread just after the client has its reply."""
    for _ in range(100):
        status, text = _post(url, body, content_type)
        if status != 503:
            break
        time.sleep(0.1)
    return status, text


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_serve_flags_take_effect(trained_runs, tiny_data):
    jpg = next(p for p in sorted((tiny_data / "images").iterdir()) if p.suffix == ".jpg")  # 128 x 128
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1", ODORCH_MAX_PIXELS="99999999")
    command = [sys.executable, "-c", "from odorch.cli import main; main()", "serve", str(trained_runs["small-b"]),
               "--port", "0", "--device", "cpu", "--max-pixels", "10000", "--max-images", "1", "--threads", "1",
               "--deadline", "1"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert " on http://127.0.0.1:" in first, first + proc.stderr.read()
        url = first.split(" on ")[-1].strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)

        # --max-pixels beats ODORCH_MAX_PIXELS: 128 x 128 = 16,384 > 10,000, refused before decoding
        status, body = _post(url, jpg.read_bytes(), "image/jpeg")
        assert status == 413 and "128x128 is over 10,000 pixels; downscale it (--max-pixels)" in body, body

        # --max-images: two instances in one request
        instance = base64.b64encode(jpg.read_bytes()).decode()
        status, body = _post_when_free(url, json.dumps({"instances": [instance, instance]}).encode(), "application/json")
        assert status == 413 and "over the limit of 1 (--max-images)" in body, body

        # --threads 1: a connection holding the only slot makes the next one get 503;
        # --deadline 1: the server closes that connection although it keeps sending its headers
        time.sleep(1.0)  # the last request's thread gives its slot back just after its reply
        for _ in range(50):  # until `held` got the slot
            held = socket.create_connection((host, int(port)), timeout=30)
            held.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
            extra = socket.create_connection((host, int(port)), timeout=30)
            extra.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = _read_all(extra)
            if reply.startswith(b"HTTP/1.0 503"):
                break
            held.close()  # `held` was the one refused: `extra` was served
            time.sleep(0.1)
        assert reply.startswith(b"HTTP/1.0 503"), reply
        held.settimeout(20)  # under the server's 30 s read timeout: only the deadline can close it in time
        try:
            for _ in range(3):
                held.sendall(b"X-Drip: 1\r\n")
            rest = _read_all(held)
        except (BrokenPipeError, ConnectionResetError):  # a slow test: the deadline closed it before the drips
            rest = b""
        assert rest == b""  # closed by the server (a recv timeout would raise instead)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
