"""The Grafana dashboard: its generator (`dashboard`) and the README's picture (`picture`)."""
