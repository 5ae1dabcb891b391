"""odorch serve over real HTTP on 127.0.0.1: the handler's answers, its errors, the body limit,
concurrent requests, and the command itself (URL printed, Ctrl-C stops it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import default_sigint

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


@pytest.fixture(scope="module")
def images(tiny_data):
    files = sorted((tiny_data / "images").iterdir())
    return {"jpg": next(p for p in files if p.suffix == ".jpg"), "png": next(p for p in files if p.suffix == ".png")}


def post(url: str, body: bytes, content_type: str, accept: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(url + "/invocations", data=body, headers=headers)
    try:
        with OPENER.open(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw(srv, head: str) -> tuple[int, bytes]:
    """Send exactly these request headers (no body) and read the whole answer (the server closes
    the connection after it)."""
    host, port = srv.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_ping_and_invocations_give_the_models_detections(served, trained_runs, images):
    import numpy as np

    from odorch.runtime.models import load_trained
    from odorch.runtime.predict import detect_files

    with OPENER.open(served.url + "/ping", timeout=10) as response:
        assert response.status == 200
    model, config = load_trained(trained_runs["small-a"] / "model")
    for kind, content_type in (("jpg", "image/jpeg"), ("png", "image/png")):
        status, body = post(served.url, images[kind].read_bytes(), content_type)
        assert status == 200, body
        [answer] = json.loads(body)["predictions"]
        [expected] = detect_files(model, [images[kind]])
        assert expected["boxes"], "the model should detect something"
        assert answer["labels"] == expected["labels"]
        assert answer["classes"] == [config["classes"][label - 1] for label in expected["labels"]]
        np.testing.assert_allclose(answer["scores"], expected["scores"], atol=1e-6)
        np.testing.assert_allclose(answer["boxes"], expected["boxes"], atol=1e-4)
    status, body = post(served.url, images["jpg"].read_bytes(), "image/jpeg", accept="application/x-od-builtin")
    assert status == 200 and "prediction" in json.loads(body)


@pytest.mark.parametrize("body, content_type, accept, status, message", [
    (b"\xff\xd8\xff not really a jpeg", "image/jpeg", None, 400, "cannot be decoded as an image"),
    (b"{not json", "application/json", None, 400, "not valid JSON"),
    (b"", "image/png", None, 400, "empty"),
    (b"a,b", "text/csv", None, 415, "unsupported content type 'text/csv'"),
], ids=["bad-jpeg", "bad-json", "empty", "csv"])  # fmt: skip
def test_bad_bodies_get_the_handlers_status_and_message(served, body, content_type, accept, status, message):
    got, text = post(served.url, body, content_type, accept)
    assert got == status
    assert message in text.decode()


def test_unsupported_accept_is_406(served, images):
    status, text = post(served.url, images["jpg"].read_bytes(), "image/jpeg", accept="text/csv")
    assert status == 406 and "unsupported accept" in text.decode()


def test_length_required_and_unknown_paths(served):
    status, text = raw(served, "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n")
    assert status == 411 and b"Content-Length" in text
    status, _ = raw(served, "POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 411
    status, _ = raw(served, "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert status == 400
    assert raw(served, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert raw(served, "POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")[0] == 404


def test_huge_body_is_refused_before_it_is_read(served):
    # Only the headers are sent: an answer can come only if the server did not wait for the 10 GB.
    head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10000000000\r\n\r\n"
    status, text = raw(served, head)
    assert status == 413
    assert "over the limit of 10 MB" in text.decode() and "--max-body-mb" in text.decode()


def test_concurrent_requests_get_their_own_answers(served, tiny_data):
    files = sorted((tiny_data / "images").iterdir())[:8]
    sequential = [post(served.url, p.read_bytes(), "application/x-image") for p in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda p: post(served.url, p.read_bytes(), "application/x-image"), files * 2))
    assert all(status == 200 for status, _ in sequential + parallel)
    for i, (_, body) in enumerate(parallel):
        assert json.loads(body) == json.loads(sequential[i % len(files)][1])


def test_serve_command_prints_the_url_and_stops_on_ctrl_c(trained_runs):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", "from odorch.cli import main; main()", "serve", str(trained_runs["small-b"]),
               "--port", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        first = proc.stdout.readline()
        assert "serving ssdlite320_mobilenet_v3_large (circle, square)" in first, first + proc.stderr.read()
        url = first.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        with OPENER.open(url + "/ping", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("stopped")


def test_serve_warns_off_loopback_and_names_a_bad_model(runner, tmp_path):
    from odorch.cli import main

    result = runner.invoke(main, ["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert "warning: listening on 0.0.0.0" in result.stderr
    assert str(tmp_path) in result.stderr and "Traceback" not in result.output
