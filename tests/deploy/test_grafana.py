"""deploy/grafana: the dashboard only queries metrics that core.metrics defines."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from core.metrics import ParlaMetrics
from tests.deploy.deploy_files import ROOT


def test_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "parla-dashboard.json").read_text(encoding="utf-8"))
    registry = CollectorRegistry()
    ParlaMetrics(registry)
    known = set()
    for family in registry.collect():
        known |= {sample.name for sample in family.samples} | {family.name}
        if family.type == "counter":
            known.add(f"{family.name}_total")
    known |= {"parla_queue_depth", "parla_jobs_in_flight"}  # exported only where callbacks are set
    known |= {f"{name}_bucket" for name in known}
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bparla_[a-z_]+", target["expr"]))
    assert queried and queried <= known, sorted(queried - known)
