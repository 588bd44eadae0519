"""Helpers shared by integration tests."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.supervisor import RunningService


def scrape(service: RunningService) -> dict[str, list]:
    """The service's /metrics, as {family name: samples}."""
    url = f"http://{service.settings.host}:{service.settings.metrics_port}/metrics"
    text = requests.get(url, timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}
