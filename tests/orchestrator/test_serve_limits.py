"""`odorch serve` under hostile clients: bounded threads (503 beyond them) and a whole-request
deadline that closes a connection dripping its headers. No model is needed: these requests never
reach the forward pass (the server is built with an empty model dict)."""

import socket
import threading

import pytest

from odorch.serve import ModelServer


def _server(**limits) -> ModelServer:
    server = ModelServer(("127.0.0.1", 0), {}, max_body=1024, **limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _connect(server: ModelServer) -> socket.socket:
    conn = socket.create_connection(server.server_address[:2], timeout=30)
    conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    return conn


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_connections_beyond_the_thread_limit_get_503_and_slots_come_back():
    server = _server(max_threads=2, deadline_s=600)
    try:
        held = [_connect(server), _connect(server)]
        extra = socket.create_connection(server.server_address[:2], timeout=30)
        extra.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _read_all(extra)
        assert reply.startswith(b"HTTP/1.0 503") and b"too many requests in flight" in reply
        for conn in held:
            conn.close()  # the handler threads see EOF and free their slots
        for _ in range(100):  # slots are freed by the handler threads, shortly after the close
            ping = socket.create_connection(server.server_address[:2], timeout=30)
            ping.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = _read_all(ping)
            if reply.startswith(b"HTTP/1.0 200"):
                break
            threading.Event().wait(0.05)
        assert reply.startswith(b"HTTP/1.0 200"), reply
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_dripping_its_headers_is_cut_at_the_deadline():
    server = _server(max_threads=4, deadline_s=0.5)
    try:
        conn = _connect(server)
        conn.settimeout(10)  # under the server's 30 s read timeout: only the deadline can close it in time
        for _ in range(3):
            conn.sendall(b"X-Drip: 1\r\n")  # keeps sending, so no per-read timeout ever fires
        assert _read_all(conn) == b""  # closed by the server (a recv timeout would raise instead)
    finally:
        server.shutdown()
        server.server_close()


def test_stop_waits_for_requests_in_flight_and_counts_the_ones_still_running():
    server = _server(max_threads=4, deadline_s=600)
    held = _connect(server)
    ping = socket.create_connection(server.server_address[:2], timeout=30)
    ping.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _read_all(ping).startswith(b"HTTP/1.0 200")  # connections are accepted in order: `held` has its slot
    server.shutdown()
    assert server.stop(grace_s=1.0) == 1  # the ping's thread was waited for, the dripping one was not
    with pytest.raises(OSError):
        socket.create_connection(server.server_address[:2], timeout=5)  # no longer listening
    held.close()
    assert server.slots.acquire(timeout=10)  # its thread saw EOF and gave the last slot back
