"""Tests of charts/entra-callout and examples/helm/nats-values.yaml, run by scripts/chart-test."""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import helm_python
import kubernetes_validate
import yaml
from helm_python.errors import HelmError

import chart_e2e
import nats_chart

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "entra-callout"
GOLDEN = CHART / "tests" / "golden"
INVALID = CHART / "tests" / "invalid"
CASES = {"default": None, "full": CHART / "ci" / "full-values.yaml"}
KUBE_VERSION = "1.33.0"
# Custom resources are not in the Kubernetes schemas; they are checked for shape only.
CUSTOM = {
    "ServiceMonitor": "a prometheus-operator CRD (monitoring.coreos.com/v1)",
    "SecretProviderClass": "a Secrets Store CSI driver CRD (secrets-store.csi.x-k8s.io/v1)",
}
MOUNT = "/etc/entra-callout/"

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL  {message}")


def ok(message):
    print(f"ok    {message}")


def load_values(path):
    return helm_python.values_from_yaml(path.read_text()) if path else {}


def render(chart, values):
    manifests = chart.render(values, name="entra-callout", namespace="nats", is_install=True)
    documents = []
    for template in sorted(manifests):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(manifests[template]):
            if doc:
                documents.append((template, doc))
    text = "".join(
        f"---\n# Source: {t}\n{manifests[t].strip()}\n"
        for t in sorted(manifests)
        if t.endswith((".yaml", ".yml")) and manifests[t].strip()
    )
    return text, documents


def lint(name, values):
    report = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors", []) or []]
    if problems:
        fail(f"lint {name}: {problems}")
    else:
        ok(f"lint {name}")


def validate_manifests(name, documents):
    for template, doc in documents:
        kind = doc.get("kind")
        what = f"{name}: {kind} {doc.get('metadata', {}).get('name')} ({template})"
        if kind in CUSTOM:
            if not doc.get("apiVersion") or not doc.get("spec"):
                fail(f"{what}: no apiVersion or spec")
            else:
                ok(f"{what}: skipped Kubernetes schema, {CUSTOM[kind]}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            ok(f"{what}: valid for Kubernetes {KUBE_VERSION}")
        except kubernetes_validate.ValidationError as err:
            fail(f"{what}: {err.message} at {list(err.path)}")
        except Exception as err:  # noqa: BLE001 - a missing schema is a failure too
            fail(f"{what}: {err}")


def check_rotation_mounts(name, documents):
    """Seeds, password, configuration and policies are mounted as whole volumes: a `subPath`
    mount is a copy made at pod start that Secret, CSI and ConfigMap updates never reach, so a
    rotated key or a changed policy would not arrive without a restart."""
    for template, doc in documents:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if "subPath" in mount or "subPathExpr" in mount:
                    fail(f"{name}: {template}: volume {mount.get('name')} is mounted with subPath")
                    return
    ok(f"{name}: no subPath mounts (rotated keys and edited policies reach the pod)")


def check_config(name, documents, binary):
    """Writes the rendered config and policies with fresh keys, then runs `entra-callout check`."""
    config_maps = {d["metadata"]["name"]: d for _, d in documents if d.get("kind") == "ConfigMap"}
    config = config_maps.get("entra-callout", {}).get("data", {}).get("config.yaml")
    policies = config_maps.get("entra-callout-policies", {}).get("data", {})
    if not config or not policies:
        fail(f"{name}: rendered config or policies ConfigMap missing")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        subprocess.run([binary, "keys", "init", str(base / "keys")], check=True, capture_output=True)
        (base / "policies").mkdir()
        for file, text in policies.items():
            (base / "policies" / file).write_text(text)
        (base / "config").mkdir()
        path = base / "config" / "config.yaml"
        path.write_text(config.replace(MOUNT, f"{base}/"))
        run = subprocess.run([binary, "check", "--config", str(path)], capture_output=True, text=True)
        if run.returncode == 0:
            ok(f"{name}: entra-callout check accepts the rendered configuration")
        else:
            fail(f"{name}: entra-callout check: {run.stdout}{run.stderr}")


def check_stand_in():
    """The stand-in renders what the official chart documents: the example above `config.merge`
    in its values.yaml, and the cluster block its test/config_test.go expects."""
    documented = {
        "$include": "./my-config.conf",
        "zzz$include": "./my-config-last.conf",
        "server_name": "nats",
        "authorization": {"token": "<< $TOKEN >>"},
        "jetstream": {"max_memory_store": "<< 1GB >>"},
    }
    conf = nats_chart.render_conf({"config": {"merge": documented, "cluster": {"enabled": True}}})
    expected = [
        "include ./my-config.conf;",
        '"token": $TOKEN',
        '"routes": [\n      "nats://nats-0.nats-headless:6222",\n      "nats://nats-1.nats-headless:6222",\n'
        '      "nats://nats-2.nats-headless:6222"\n    ]',
        '"max_memory_store": 1GB',
        '"server_name": "nats"',
        "include ./my-config-last.conf;",
    ]
    positions = [conf.find(text) for text in expected]
    if -1 in positions or positions != sorted(positions):
        fail(f"nats chart stand-in: expected, in order, {expected}; rendered:\n{conf}")
    else:
        ok("nats chart stand-in: renders the chart's documented merge example and cluster routes")


def check_nats_values(binary, nats_server):
    """examples/helm/nats-values.yaml as the official chart renders it, with real keys and the
    nats container's environment: `nats-server -t` must accept it."""
    values = yaml.safe_load(nats_chart.VALUES_FILE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        try:
            keys, secrets = chart_e2e.make_keys(binary, base)
            conf = nats_chart.render_conf(values, chart_e2e.key_values(keys))
            env = nats_chart.pod_env(values.get("container", {}).get("env"), secrets)
            box_env = nats_chart.pod_env(values.get("natsBox", {}).get("container", {}).get("env"), secrets)
        except (nats_chart.Unmodeled, HelmError, KeyError) as err:
            fail(f"nats-values.yaml: {err}")
            return
        path = base / "nats.conf"
        path.write_text(conf)
        run = subprocess.run(
            [nats_server, "-t", "-c", str(path)], capture_output=True, text=True, env=dict(os.environ, **env)
        )
        if run.returncode == 0:
            ok("nats-values.yaml: nats-server -t accepts the official chart's rendering")
        else:
            fail(f"nats-values.yaml: nats-server -t: {run.stdout}{run.stderr}\n{conf}")
        # nats-box (and `helm test`, a nats-box pod) must authenticate as an auth user, never
        # through the callout, with a password from the Secret.
        user = box_env.get("NATS_USER")
        auth_users = values["config"]["merge"]["authorization"]["auth_callout"]["auth_users"]
        if values.get("natsBox", {}).get("enabled", True) and user not in auth_users:
            fail(f"nats-values.yaml: nats-box user {user!r} is not in auth_users {auth_users}")
        else:
            ok(f"nats-values.yaml: nats-box connects as auth user {user!r}")


def end_to_end(chart, binary, nats_server):
    def render_checked(chart, values):
        chart.validate_schema(values)
        return render(chart, values)

    try:
        results = chart_e2e.run(binary, nats_server, chart, render_checked)
    except Exception as err:  # noqa: BLE001 - any failure to come up is the test failing
        fail(f"end to end: {err}")
        return
    for passed, message in results:
        (ok if passed else fail)(f"end to end: {message}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--nats-server", required=True)
    parser.add_argument("--update", action="store_true", help="rewrite the golden files")
    args = parser.parse_args()
    chart = helm_python.Chart.load(str(CHART))

    for name, path in CASES.items():
        values = load_values(path)
        lint(name, values)
        try:
            chart.validate_schema(values)
            text, documents = render(chart, values)
        except HelmError as err:
            fail(f"render {name}: {err}")
            continue
        golden = GOLDEN / f"{name}.yaml"
        if args.update:
            golden.write_text(text)
            ok(f"{name}: wrote {golden.relative_to(ROOT)}")
        elif not golden.exists() or golden.read_text() != text:
            fail(f"{name}: render differs from {golden.relative_to(ROOT)} (scripts/chart-test --update)")
        else:
            ok(f"{name}: render matches {golden.relative_to(ROOT)}")
        validate_manifests(name, documents)
        check_rotation_mounts(name, documents)
        check_config(name, documents, args.binary)

    for path in sorted(INVALID.glob("*.yaml")):
        values = load_values(path)
        try:
            chart.validate_schema(values)
            chart.render(values, name="entra-callout", namespace="nats")
            fail(f"invalid/{path.name}: accepted")
        except HelmError as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            ok(f"invalid/{path.name}: rejected ({reason[:160]})")

    check_stand_in()
    check_nats_values(args.binary, args.nats_server)
    end_to_end(chart, args.binary, args.nats_server)

    print(f"\n{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
