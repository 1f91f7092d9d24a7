"""The CLI starts without the heavy modules of commands it does not run, and the
packages that load their names on first use still give the same objects."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_cli_imports_no_engine_no_fastapi_and_no_erasure() -> None:
    code = (
        "import sys, playpulse.cli; "
        "print(sorted(m for m in ('playpulse.alerts.engine', 'fastapi', "
        "'playpulse.privacy.erase', 'playpulse.monitoring.metrics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_package_names_are_the_modules_objects() -> None:
    import playpulse.alerts
    import playpulse.monitoring
    import playpulse.privacy
    from playpulse.alerts import AlertStore, builtin_rules
    from playpulse.alerts.engine import AlertStore as EngineAlertStore
    from playpulse.alerts.rules import builtin_rules as rules_builtin
    from playpulse.monitoring import PipelineMetrics
    from playpulse.monitoring.metrics import PipelineMetrics as MetricsPipelineMetrics
    from playpulse.privacy import erase_user, pseudonym
    from playpulse.privacy.erase import erase_user as erase_erase_user
    from playpulse.privacy.pseudonym import pseudonym as pseudonym_function

    assert AlertStore is EngineAlertStore
    assert builtin_rules is rules_builtin
    assert PipelineMetrics is MetricsPipelineMetrics
    assert erase_user is erase_erase_user
    assert pseudonym is pseudonym_function  # the function, not the submodule of that name
    for package in (playpulse.alerts, playpulse.monitoring, playpulse.privacy):
        for name in package.__all__:
            assert getattr(package, name) is not None
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            package.nope  # noqa: B018
