"""Tests against real processes: etcd, backends, twistd."""
