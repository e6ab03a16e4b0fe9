"""The registry: reading and watching etcd, and turning its keys into a catalog."""
