"""Fixtures for the extension's tests: the CDP driver and the WAV of tests/sdk_js, and a
real ``playpulse up``."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from playpulse.testing import load_module

REPO = Path(__file__).resolve().parents[2]
_sdk_conftest = load_module(
    REPO / "tests" / "sdk_js" / "conftest.py", "playpulse_tests_sdk_js_conftest_for_extension"
)
cdp = _sdk_conftest.cdp
livedata = _sdk_conftest.livedata
wav_bytes = _sdk_conftest.wav_bytes


@pytest.fixture(scope="session")
def sdk_conftest() -> ModuleType:
    """tests/sdk_js/conftest.py as a module (``wav_bytes``)."""
    return _sdk_conftest
