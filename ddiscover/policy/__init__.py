"""Per-service policies: what may differ from one service to another, and who said so.

- :mod:`.values`: the value types (durations, status sets, the enumerations) and their parsers;
- :mod:`.model`: :class:`~.model.ServicePolicy` (every key, its default, its parser) and the
  provenance of a value (:class:`~.model.Origin`);
- :mod:`.merge`: the order the sources are stacked in, and the effective policy;
- :mod:`.services_file`: the host's TOML services file, with exact and glob names;
- :mod:`.registry_options`: the registry's per-service ``options`` JSON object;
- :mod:`.toml_lines`: the line each TOML key is written on, for error messages.

Everything here is pure: values in, values or one-line errors out.  Reading the file again on
SIGHUP or when it changes, and applying policies to listeners, balancers and checkers, is the
application's job.
"""
