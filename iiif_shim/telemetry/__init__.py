"""What operations watch: Prometheus metrics and the request id."""
