"""Registers ``twistd ddiscover-register``; imports nothing from ddiscover until it is used."""

from twisted.application.service import ServiceMaker

ddiscover_register = ServiceMaker(
    "ddiscover-register",
    "ddiscover.registrar.tap",
    "Keep a backend registered in etcd (v2 TTL or v3 lease) while it runs.",
    "ddiscover-register",
)
