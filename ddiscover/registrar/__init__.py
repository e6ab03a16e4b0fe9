"""``twistd ddiscover-register``: keep a backend registered in etcd the way ddiscover reads it."""
