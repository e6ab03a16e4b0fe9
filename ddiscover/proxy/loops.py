"""Backends that would loop: a backend address that is one of ddiscover's own listeners.

A backend registered at ``127.0.0.1:80`` (or any address of this host) for a service port
ddiscover listens on sends every client connection back into ddiscover, which forwards it
again, until ``--maxconn`` is used up by one client.  Such a backend is refused when the
catalog arrives, with one line naming it: :class:`LoopGuard`.

"Local" means a loopback address, the wildcard, ``localhost``, or an address of one of this
host's interfaces (read once, from the kernel, without DNS: :func:`host_addresses`).  With
``--interface`` set to one address, only that address (and, for a loopback interface, the
loopback range) loops.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable

import attrs

from ddiscover._log import make_logger
from ddiscover.catalog import Backend, Catalog, Rejection, Service
from ddiscover.text import clip

log = make_logger()

#: ``ioctl`` request for an interface's IPv4 address (Linux ``SIOCGIFADDR``).
_SIOCGIFADDR = 0x8915


def host_addresses() -> frozenset[str]:
    """The IPv4 and IPv6 addresses of this host's interfaces, as the kernel lists them.

    Reads ``/proc/net/if_inet6`` and asks each interface for its IPv4 address; anything
    that cannot be read is left out (loopback is always local anyway).
    """
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                raw = line.split()[0]
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue
            found.add(socket.inet_ntoa(reply[20:24]))
    return frozenset(found)


def _local(host: str, interface: str, addresses: frozenset[str]) -> bool:
    """Whether a connect to ``host`` reaches a listener bound to ``interface`` here."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a hostname: resolved at connect time, caught there if anywhere
    try:
        bound = ipaddress.ip_address(interface)
    except ValueError:
        return False
    if bound.is_unspecified:
        return ip.is_loopback or ip.is_unspecified or str(ip) in addresses
    return ip == bound or (bound.is_loopback and ip.is_loopback and ip.version == bound.version)


@attrs.frozen
class _Judged:
    """One service as :class:`LoopGuard` last judged it, against the ports of its catalog."""

    service: Service
    ports: frozenset[int]
    loops: frozenset[Backend]
    kept: Service


@attrs.define
class LoopGuard:
    """Takes out of a catalog every backend that is one of our own listeners.

    ``addresses`` gives this host's addresses, read on first use.
    """

    interface: str
    addresses: Callable[[], frozenset[str]] = host_addresses
    _known: frozenset[str] | None = None
    _logged: frozenset[str] = frozenset()
    # Per service name: the service last seen, the ports it was judged against, its loops.
    # The watcher keeps an unchanged service the same object, so a catalog costs a lookup
    # per unchanged service, not a look at each of its backends.
    _ports: frozenset[int] = frozenset()
    _judged: dict[str, _Judged] = attrs.Factory(dict)

    def refuse(self, catalog: Catalog) -> Catalog:
        """``catalog`` without looping backends, each a rejection (logged once while it lasts)."""
        ports = frozenset(service.port for service in catalog.services.values())
        if ports == self._ports:
            ports = self._ports  # one comparison here, identity per service below
        self._ports = ports
        if self._known is None:
            self._known = self.addresses()
        known = self._known
        services: dict[str, Service] = {}
        rejections = set(catalog.rejections)
        judged: dict[str, _Judged] = {}
        for name, service in catalog.services.items():
            last = self._judged.get(name)
            if last is None or last.service is not service or last.ports is not ports:
                loops = frozenset(
                    backend
                    for backend in service.backends
                    if backend.address.port in ports
                    and _local(backend.address.host, self.interface, known)
                )
                kept = service
                if loops:
                    kept = attrs.evolve(service, backends=service.backends - loops)
                last = _Judged(service, ports, loops, kept)
            judged[name] = last
            services[name] = last.kept
            rejections.update(_rejection(name, backend) for backend in last.loops)
        self._judged = judged
        refused = frozenset(r.key for r in rejections - set(catalog.rejections))
        for rejection in sorted(rejections - set(catalog.rejections), key=str):
            if rejection.key not in self._logged:
                log.error("{rejection}", rejection=str(rejection))
        self._logged = refused
        if not refused:
            return catalog
        return Catalog(services, frozenset(rejections))


def _rejection(service: str, backend: Backend) -> Rejection:
    return Rejection(
        clip(f"{service}/{backend.id}"),
        f"backend {backend.address} is ddiscover's own listener: refused as a loop",
    )
