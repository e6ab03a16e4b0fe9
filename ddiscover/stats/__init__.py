"""The stats port: what ddiscover knows, served over HTTP."""
