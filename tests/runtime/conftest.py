"""Fixtures for the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import CaptureProcess, free_port


@pytest.fixture
def capture_process(tmp_path: Path) -> Iterator[CaptureProcess]:
    server = CaptureProcess(tmp_path / "capture", free_port(), bounce_domain="bounces.test")
    server.start()
    try:
        yield server
    finally:
        server.kill()
