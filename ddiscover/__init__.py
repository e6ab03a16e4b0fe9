"""ddiscover: a per-host proxy that makes every service registered in etcd reachable locally."""

__version__ = "0.1.0"
