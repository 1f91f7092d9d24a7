"""Fixtures for the browser SDK's tests: Chromium over CDP (tests/sdk_js/cdp.py), a real
``playpulse up`` (tests/api/livedata.py) and a WAV file made here with ``wave``."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from playpulse.testing import load_module, serve_app

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def load_cdp() -> ModuleType:
    """tests/sdk_js/cdp.py as a module (``tests`` is not a package)."""
    return load_module(HERE / "cdp.py", "playpulse_tests_sdk_js_cdp")


@pytest.fixture(scope="session")
def cdp() -> ModuleType:
    """The CDP driver module; skips when /usr/bin/chromium or websockets is missing."""
    module = load_cdp()
    if not module.CHROMIUM.exists():
        pytest.skip(f"{module.CHROMIUM} is missing: apt-get install chromium")
    return module


@pytest.fixture(scope="session")
def livedata() -> ModuleType:
    """tests/api/livedata.py (``running_up``)."""
    return load_module(REPO / "tests" / "api" / "livedata.py", "playpulse_tests_api_livedata")


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of ``seconds`` of a quiet 440 Hz tone."""
    import math

    frames = bytearray()
    for i in range(int(seconds * rate)):
        value = int(800 * math.sin(2 * math.pi * 440 * i / rate))
        frames += value.to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return out.getvalue()


@pytest.fixture(scope="session")
def wav_data_url() -> str:
    """A 60 s WAV as a ``data:audio/wav;base64,...`` URL."""
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(60.0)).decode()


@pytest.fixture(scope="module")
def up(
    livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A real ``playpulse up`` without write keys: ``(base_url, data_dir)``."""
    root = tmp_path_factory.mktemp("sdk-up")
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base, root / "data"


#: ``app`` on uvicorn at 127.0.0.1 and a free port until the block ends.
serve = serve_app
