"""``playpulse import --schema NAME``: another pipeline's payloads from a file, mapped,
processed and counted by the catalog; a payload that cannot be mapped is quarantined."""

from __future__ import annotations

import json
from pathlib import Path

from playpulse.testing import run_cli


def test_import_marketplace_payloads(tmp_path: Path) -> None:
    payloads = [
        {
            "eventType": "ProductView",
            "vendorId": "shop-1",
            "customerId": "c-1",
            "productId": "p-1",
            "metadata": {"timestamp": "2026-11-01T12:00:00Z"},
        },
        {
            "eventType": "CartAdd",
            "vendorId": "shop-1",
            "customerId": "c-1",
            "productId": "p-1",
            "metadata": {"timestamp": "2026-11-01T12:01:00Z"},
        },
        {"eventType": "Teleport", "vendorId": "shop-1", "customerId": "c-1"},
    ]
    source = tmp_path / "interactions.ndjson"
    source.write_text("\n".join(json.dumps(p) for p in payloads) + "\n")
    data = ["--data-dir", str(tmp_path / "data")]
    done = run_cli(*data, "import", str(source), "--schema", "marketplace")
    assert done.returncode == 0, done.stderr
    funnel = run_cli(*data, "query", "funnel", "--format", "json")
    assert funnel.returncode == 0, funnel.stderr
    rows = json.loads(funnel.stdout)
    assert [(r["vendor_id"], r["views"], r["cart_adds"]) for r in rows] == [("shop-1", 1, 1)]
    quarantined = run_cli(*data, "quarantine", "list", "--format", "json")
    assert len(json.loads(quarantined.stdout)) == 1
    refused = run_cli(*data, "import", str(source), "--schema", "nope")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ")
