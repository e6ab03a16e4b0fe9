# ddiscover: run once per host with host networking, so service ports are bound on the host:
#   docker run -d --name ddiscover --network host -e ETCD_HOST=10.0.0.5:2379 \
#       --ulimit nofile=65536:65536 ddiscover
# Every proxied connection needs two file descriptors; ddiscover raises its soft limit to the
# hard one at start. Services on ports below 1024 need root (the default here) or
# --cap-drop ALL --cap-add NET_BIND_SERVICE.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ddiscover ./ddiscover
COPY twisted ./twisted
# Build Twisted's plugin cache at install time: at run time site-packages may be read-only
# and twistd would otherwise rescan (and warn) on every start.
RUN pip install --no-cache-dir . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && rm -rf /src

WORKDIR /
# The stats port; EXPOSE documents it, host networking ignores it.
EXPOSE 1936
# Healthy while /health answers 200: the registry is in sync and ddiscover is not stopping
# (docs/stats.md). Python's own urllib, as the image has no curl; a failure is one line in
# `docker inspect`. With another --stats-port, set DDISCOVER_HEALTH_URL to match.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["python", "-c", "import os, sys, urllib.request as r\nurl = os.environ.get('DDISCOVER_HEALTH_URL', 'http://127.0.0.1:1936/health')\ntry: r.urlopen(url, timeout=2)\nexcept Exception as e: sys.exit(f'{url}: {e}')"]
# SIGTERM stops accepting at once and lets open connections drain for up to --drain-timeout
# (8 s by default), inside `docker stop`'s 10 s. --pidfile= keeps a stale twistd.pid from
# blocking `docker restart`.
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "ddiscover"]
