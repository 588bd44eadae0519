"""The shared client helper: retries UNAVAILABLE with backoff until the service is there."""

from __future__ import annotations

import signal
import subprocess
import sys

import grpc
import pytest

from services.common.net import free_port
from services.embedding.client import EmbeddingClient


async def test_client_retries_until_a_late_service_comes_up(embedding_model: object) -> None:
    port, metrics_port = free_port(), free_port()
    flags = ["--port", str(port), "--metrics-port", str(metrics_port), "--no-fast", "--no-http"]
    # The call starts before the server process does; only retries can make it succeed.
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "embedding", *flags])
    try:
        async with EmbeddingClient(f"127.0.0.1:{port}", max_attempts=30, max_backoff_s=1.0) as client:
            result = await client.embed(["worth the wait"])
        assert result.vectors.shape == (1, 384)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


async def test_client_gives_up_with_unavailable_when_nothing_listens() -> None:
    async with EmbeddingClient(f"127.0.0.1:{free_port()}", max_attempts=3, max_backoff_s=0.1) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.embed(["anyone there?"])
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
