"""``privacy delete`` against a real ``playpulse up`` (one processor process, and a group
of two): the running processor applies the erasure between batches, the collector keeps
its stream open meanwhile, and afterwards the data dir answers as a fresh one fed the
same events without the user's, with no file holding the id."""

from __future__ import annotations

from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.service import ensure_processed
from playpulse.stream.factory import open_stream
from playpulse.testing import (
    assert_same_answers,
    catalog_answers,
    load_module,
    playpulse_server,
)

erase_tests = load_module(Path(__file__).with_name("test_erase.py"), "pp_test_privacy_erase")


def appended(settings: Settings, records: list[tuple[str, bytes]]) -> dict[int, int]:
    """Append ``records``; the stream's end offsets after (targets for ensure_processed)."""
    erase_tests.append(settings, records)
    stream = open_stream(settings)
    try:
        return {p.partition: p.end_offset for p in stream.partitions()}
    finally:
        stream.close()


@pytest.mark.parametrize("processors", ["1", "2"])
def test_playpulse_up_applies_the_erasure(tmp_path: Path, processors: str) -> None:
    records = erase_tests.simulated(seed=13, events=800)
    user = erase_tests.busiest_user(records)
    others = [r for r in records if r[0] != user]
    later = [r for r in erase_tests.simulated(seed=14, events=200) if r[0] != user]
    data = Settings(data_dir=tmp_path / "data")
    with playpulse_server(
        "up", data.data_dir, tmp_path / "up.log", "--processors", processors
    ) as _:
        assert ensure_processed(data, appended(data, records), timeout_s=120) is None
        receipt = erase_tests.delete(data, user)
        assert ensure_processed(data, appended(data, later), timeout_s=120) is None
        got = catalog_answers(data)
    assert receipt["places"]["stream"]["records_removed"] == len(records) - len(others)
    assert receipt["verification"]["files_holding_the_id"] == []
    assert erase_tests.files_holding(data.data_dir, user.encode()) == []
    want = erase_tests.fresh(tmp_path, "without", [others, later])
    assert_same_answers(got, catalog_answers(want))
