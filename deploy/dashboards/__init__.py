"""Grafana dashboards as code; `python -m deploy.dashboards.generate` writes them into the Helm chart."""
