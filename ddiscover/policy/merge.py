"""The effective policy of a service: the layers of settings stacked in order, last wins.

The order, from weakest to strongest::

    built-in defaults < command line < services file [defaults]
                      < registry options < services file [services."<pattern>"] (least
                                           specific pattern first, so the most specific wins)

The issue puts the whole services file above the registry ("the host operator has the last
word").  Its ``[defaults]`` table is read here as what its name says, the operator's defaults:
they replace ours and the command line's for every service, but a service owner who writes
``"balance": "leastconn"`` into the registry's ``options`` key, because they know their
protocol, is not overridden by a host-wide default written without that service in mind.  The
operator still has the last word on any service by naming it (or a glob that matches it) in a
``[services."..."]`` table.  This is haproxy's ``defaults`` section / ``server`` line order, and
Envoy's cluster defaults below per-cluster config.

Every effective value keeps its :class:`~ddiscover.policy.model.Origin`, so the stats page can
say where each one came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ddiscover.config import Config
from ddiscover.policy.model import (
    KEYS,
    Layer,
    Origin,
    ServicePolicy,
    Setting,
    Source,
    show,
)

BUILT_IN = Layer(
    {
        field.name: Setting(field.default, Origin(Source.DEFAULT))
        for field in attrs.fields(ServicePolicy)
    }
)
"""Every key at its built-in default."""

_COMMAND_LINE = {
    "check_interval": "--check-interval",
    "rise": "--rise",
    "fall": "--fall",
    "connect_timeout": "--connect-timeout",
    "idle_timeout": "--idle-timeout",
    "retries": "--retries",
}


def command_line(config: Config) -> Layer:
    """The command line's per-service settings (already validated by ``tap``) as a layer.

    ``--maxconn`` is not among them: it caps the whole process, while the ``maxconn`` key caps
    one service.
    """
    return Layer(
        {
            key: Setting(getattr(config, key), Origin(Source.COMMAND_LINE, option))
            for key, option in _COMMAND_LINE.items()
        }
    )


@attrs.frozen
class EffectivePolicy:
    """A service's policy and, for every key, where its value came from."""

    policy: ServicePolicy
    origins: Mapping[str, Origin]

    def rows(self) -> tuple[tuple[str, str, str], ...]:
        """``(key, value, origin)`` for every key, as the stats page lists them."""
        return tuple(
            (key, show(key, getattr(self.policy, key)), str(self.origins[key])) for key in KEYS
        )


def merge(layers: Iterable[Layer]) -> EffectivePolicy:
    """Stack ``layers`` on the built-in defaults; a key in a later layer replaces earlier ones."""
    settings = dict(BUILT_IN.settings)
    for layer in layers:
        settings.update(layer.settings)
    return EffectivePolicy(
        ServicePolicy(**{key: setting.value for key, setting in settings.items()}),
        {key: setting.origin for key, setting in settings.items()},
    )


def resolve(
    command: Layer,
    file_defaults: Layer,
    registry: Layer,
    file_services: Iterable[Layer],
) -> EffectivePolicy:
    """One service's effective policy, with the layers in the order this module argues for.

    ``file_services`` are the services file's tables that match the service, least specific
    first (:meth:`ddiscover.policy.services_file.ServicesFile.layers_for`).
    """
    return merge([command, file_defaults, registry, *file_services])
