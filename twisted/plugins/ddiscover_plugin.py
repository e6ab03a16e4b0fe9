"""Registers ``twistd ddiscover``; imports nothing from ddiscover until the command is used."""

from twisted.application.service import ServiceMaker

ddiscover = ServiceMaker(
    "ddiscover",
    "ddiscover.tap",
    "Forward TCP connections to healthy backends registered in etcd.",
    "ddiscover",
)
