"""The proxy: listeners per service port, the balancer and the forwarding protocols."""
