"""Register demo backends the way docker-register does, until stopped.

Every 10 s it re-sets ``<prefix>/<service>/<id>`` = ``host:port`` and ``<prefix>/<service>/port``
with a 15 s TTL (etcd v2 keys API), exactly like docker-register's template; on SIGTERM or
Ctrl-C it deletes its keys.  Usage: demo_registrar.py ETCD_URL SERVICE PORT ID=HOST:PORT...
"""

import contextlib
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TTL = 15
REFRESH = 10


def put(etcd: str, key: str, value: str) -> None:
    data = urllib.parse.urlencode({"value": value, "ttl": TTL}).encode()
    request = urllib.request.Request(f"{etcd}/v2/keys{key}", data=data, method="PUT")
    urllib.request.urlopen(request, timeout=5).close()


def delete(etcd: str, key: str) -> None:
    request = urllib.request.Request(f"{etcd}/v2/keys{key}", method="DELETE")
    with contextlib.suppress(urllib.error.URLError):
        urllib.request.urlopen(request, timeout=5).close()


def main(etcd: str, service: str, port: str, *backends: str) -> None:
    keys = {f"/backends/{service}/port": port}
    for backend in backends:
        backend_id, _, address = backend.partition("=")
        keys[f"/backends/{service}/{backend_id}"] = address

    def stop(_signum: int, _frame: object) -> None:
        for key in keys:
            delete(etcd, key)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            for key, value in keys.items():
                put(etcd, key, value)
        except (urllib.error.URLError, OSError) as e:
            print(f"demo registrar: etcd {etcd} not reachable yet: {e}", file=sys.stderr)
            time.sleep(0.2)
            continue
        time.sleep(REFRESH)


if __name__ == "__main__":
    main(*sys.argv[1:])
