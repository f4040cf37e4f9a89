"""Render the chart's API and worker Deployments for `podman kube play` (check-image, step 7).

There is no Kubernetes API server here, but podman runs a Deployment's pod: the chart's own
pod spec (security contexts, read-only root, volumes, args, environment) with the image
just built. podman 4.3 needs three adaptations, made here and nowhere else: host
networking instead of container ports (PostgreSQL and Redis listen on the host's
127.0.0.1), probes on the port number, and the Secret's values inlined (its kube play
cannot read a Secret for secretKeyRef).

    python deploy/lint/kube_play.py IMAGE PORT > play.yaml   # reads APIARY_TEST_* from env
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "apiary"


def main(image: str, port: int) -> None:
    repository, tag = image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # Qdrant is not started: nothing in this check reads a knowledge base.
        "settings": {
            "environment": "production",
            "logLevel": "INFO",
            "qdrantUrl": "http://127.0.0.1:6333",
        },
        "secrets": {"existingSecret": "apiary-kube-play"},
        "api": {"port": port, "autoscaling": {"enabled": False}, "replicas": 1},
        "worker": {"replicas": 1, "concurrency": 2},
        "networkPolicy": {"enabled": False},
    }
    secret_values = {
        "database-url": os.environ["APIARY_TEST_DATABASE_URL"],
        "redis-url": os.environ["APIARY_TEST_REDIS_URL"],
        "jwt-secret": os.environ["APIARY_JWT_SECRET"],
    }
    rendered = helm.Chart.load(CHART).render(values, name="apiary", namespace="apiary")
    deployments: list[dict[str, Any]] = [
        doc
        for template, text in sorted(rendered.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "Deployment"
    ]
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            container.pop("ports", None)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" in container.get(probe, {}):
                    container[probe]["httpGet"]["port"] = port
            for variable in container["env"]:
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    del variable["valueFrom"]
                    variable["value"] = secret_values[ref["key"]]
    yaml.safe_dump_all(deployments, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
