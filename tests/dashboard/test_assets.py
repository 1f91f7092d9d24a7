"""The dashboard's files ship in the package and load nothing from elsewhere."""

from __future__ import annotations

import hashlib
import re

from playpulse.dashboard import STATIC_DIR

VENDOR = STATIC_DIR / "vendor" / "echarts"


def test_the_vendored_chart_library_matches_its_record():
    record = (VENDOR / "VENDORED.md").read_text()
    assert "echarts@6.1.0" in record
    digest = hashlib.sha256((VENDOR / "echarts.min.js").read_bytes()).hexdigest()
    assert digest in record
    for name in ("LICENSE", "NOTICE", "LICENSE-d3", "LICENSE-zrender"):
        assert (VENDOR / name).is_file(), name
    assert "Apache License" in (VENDOR / "LICENSE").read_text()


def test_pages_and_scripts_reference_only_this_site():
    files = [STATIC_DIR / "index.html", STATIC_DIR / "login.html", STATIC_DIR / "app.css"]
    files += sorted((STATIC_DIR / "js").glob("*.js"))
    for path in files:
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert ref.startswith(("/", "#")), (path.name, ref)
    index = (STATIC_DIR / "index.html").read_text()
    assert '<script src="/assets/vendor/echarts/echarts.min.js" defer>' in index
    assert '<script type="module" src="/assets/js/app.js">' in index
