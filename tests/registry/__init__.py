"""Tests of the registry: etcd layout, the v2 client and the watch loop."""
