"""The image's HEALTHCHECK: one script for every role the container was started as.

`serve` answers GET /healthz on APIARY_PORT; `worker` has no port, so its check is that the
broker it consumes from (APIARY_REDIS_URL) answers PING. Any other command (init, migrate)
is a one-shot and counts as healthy while it runs.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    with open("/proc/1/cmdline", "rb") as file:
        argv = [part.decode() for part in file.read().split(b"\0") if part]
    if "serve" in argv:
        port = os.environ.get("APIARY_PORT", "8000")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    if "worker" in argv:
        import redis

        client = redis.Redis.from_url(os.environ["APIARY_REDIS_URL"], socket_timeout=4)
        return 0 if client.ping() else 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # any failure is "unhealthy"; say why in `podman inspect`
        print(f"unhealthy: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
