"""playpulse catalog import/show and playpulse enrich run/sql (the typer apps the
playpulse command registers as ``catalog`` and ``enrich``)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from playpulse.config import Settings
from playpulse.enrich.cli import catalog_app, enrich_app

runner = CliRunner()


def test_import_run_show_and_sql(listened: Settings, tmp_path: Path) -> None:
    data = ["--data-dir", str(listened.data_dir)]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps([{"content_id": "spotify:track:b", "genres": ["pop"]}]))
    done = runner.invoke(catalog_app, ["import", str(meta), *data])
    assert done.exit_code == 0, done.output
    assert "imported metadata of 1 title(s)" in done.output

    done = runner.invoke(enrich_app, ["run", "--provider", "none", *data])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "catalog: 4 title(s); similar: 8 pair(s)"

    done = runner.invoke(catalog_app, ["show", "spotify:track:b", *data])
    assert done.exit_code == 0, done.output
    entry = json.loads(done.output)
    assert entry["genres"] == ["pop"]
    # b and c are always played together (cosine 1), a with both and more.
    assert [s["content_id"] for s in entry["similar_content"]] == [
        "spotify:track:c",
        "spotify:track:a",
    ]
    assert entry["similar_content"][0]["score"] == 1.0

    done = runner.invoke(catalog_app, ["show", "nope", *data])
    assert done.exit_code != 0
    assert "does not know 'nope'" in str(done.exception)

    done = runner.invoke(enrich_app, ["sql", "similar_content"])
    assert done.exit_code == 0, done.output
    assert "FROM enrich_similar AS s" in done.output
    assert "@content_id" in done.output


def test_bad_metadata_and_provider(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    bad = tmp_path / "bad.csv"
    bad.write_text("content_id,release_date\nx,tomorrow\n")
    done = runner.invoke(catalog_app, ["import", str(bad), *data])
    assert done.exit_code != 0
    assert "row 2: release_date 'tomorrow' is not YYYY-MM-DD" in str(done.exception)
    done = runner.invoke(enrich_app, ["run", "--provider", "magic", *data])
    assert "--provider must be local, anthropic or none" in str(done.exception)
