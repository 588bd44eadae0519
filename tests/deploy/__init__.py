"""Checks of the deployment assets: Dockerfile, Helm chart, dashboards, Prometheus config."""
