"""COS integration: what the charm offers Prometheus, Grafana and Loki.

The provider sides of prometheus_scrape and grafana_dashboard and the consumer side of
loki_push_api, written from their relation data contracts. Each module turns the charm's
state into relation data (or a Pebble layer) and writes it only when it changed, so hooks
that change nothing cost nothing and wake nobody.
"""
