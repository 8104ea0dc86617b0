"""A stand-in for the official `nats/nats` chart (2.14.2), reduced to how it renders nats.conf.

CI cannot reach the chart's repository, so this reproduces its documented rendering rule from a
reading of nats-io/k8s `helm/charts/nats` at 2.14.2 (none of its files are copied):

- `files/config/config.yaml` renders a default configuration from the values (server_name
  `<< $SERVER_NAME >>`, lame duck settings, pid_file, port, the cluster block with one route
  per replica, http_port); `templates/_helpers.tpl` `nats.defaultValues` and
  `nats.loadMergePatch` parse it (`fromYaml`) and `mergeOverwrite` a `deepCopy` of
  `config.merge` onto it;
- `nats.formatConfig` writes the result with `toPrettyJson`, undoes Go's HTML escaping of `<`,
  `>` and `&` (`_toPrettyRawJson.tpl`), turns keys ending in `$include` into include
  directives, and unquotes every string of the form `"<< ... >>"` — every other string stays
  a quoted JSON string (the chart's values.yaml documents rule 1 and 2 above `config.merge`).

The stand-in is a chart written to a temporary directory and rendered by the real Helm SDK
(helm-python-sdk), so Helm's own value coalescing and the same sprig functions apply. Values
it does not model are refused rather than ignored (`MODELED`).
"""

import pathlib
import tempfile

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The values the README tells operators to install the official chart with.
VALUES_FILE = ROOT / "examples" / "helm" / "nats-values.yaml"
RELEASE = "nats"
# Values keys the stand-in renders like the chart; anything else under these roots is refused.
MODELED = {
    "config": {"cluster", "merge", "monitor", "nats", "serverNamePrefix"},
    "container": {"env"},
    "natsBox": {"enabled", "container"},
}

CHART_YAML = """apiVersion: v2
name: nats
version: 2.14.2
description: stand-in for nats/nats 2.14.2's nats.conf rendering (see scripts/nats_chart.py)
"""

# The chart's defaults for the modeled keys (its values.yaml).
VALUES_YAML = """config:
  cluster: {enabled: false, port: 6222, replicas: 3, noAdvertise: true}
  nats: {port: 4222}
  monitor: {enabled: true, port: 8222}
  serverNamePrefix: ""
  merge: {}
container:
  env: {}
natsBox:
  enabled: true
  container:
    env: {}
"""

# The default configuration, as files/config/config.yaml and files/config/cluster.yaml render
# it for the modeled values (release "nats": statefulSet "nats", headlessService
# "nats-headless").
DEFAULT_CONFIG = """server_name: << $SERVER_NAME >>
lame_duck_grace_period: 10s
lame_duck_duration: 30s
pid_file: /var/run/nats/nats.pid
port: {{ .Values.config.nats.port }}
{{- with .Values.config.cluster }}{{ if .enabled }}
cluster:
  name: {{ $.Release.Name }}
  port: {{ .port }}
  no_advertise: {{ .noAdvertise }}
  routes:
  {{- range $i := until (int .replicas) }}
  - nats://{{ $.Release.Name }}-{{ $i }}.{{ $.Release.Name }}-headless:{{ int $.Values.config.cluster.port }}
  {{- end }}
{{- end }}{{ end }}
{{- if .Values.config.monitor.enabled }}
http_port: {{ .Values.config.monitor.port }}
{{- end }}
"""

CONFIG_MAP = r"""{{- $doc := tpl (.Files.Get "files/config.yaml") . | fromYaml }}
{{- $doc = mergeOverwrite $doc (deepCopy .Values.config.merge) }}
{{- $json := toPrettyJson $doc | replace "\\u003c" "<" | replace "\\u003e" ">" | replace "\\u0026" "&" }}
{{- $json = regexReplaceAll "\".*\\$include\": \"(.*)\",?" $json "include ${1};" }}
{{- $json = regexReplaceAll "\"<<\\s+(.*?)\\s+>>\"" $json "${1}" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: nats-config
data:
  nats.conf: |
    {{- $json | nindent 4 }}
"""


class Unmodeled(Exception):
    """The values set something the stand-in does not render like the chart."""


def check_modeled(values):
    for root, keys in MODELED.items():
        extra = set(values.get(root) or {}) - keys
        if extra:
            raise Unmodeled(f"{root}: {sorted(extra)} not modeled by the stand-in")
    extra = set(values) - set(MODELED)
    if extra:
        raise Unmodeled(f"{sorted(extra)} not modeled by the stand-in")


def render_conf(*values_layers):
    """nats.conf as the chart renders it for the values layers (later layers win, as with
    several `-f` files)."""
    values = {}
    for layer in values_layers:
        check_modeled(layer)
        values = merge(values, layer)
    with tempfile.TemporaryDirectory() as tmp:
        chart = pathlib.Path(tmp) / "nats"
        (chart / "templates").mkdir(parents=True)
        (chart / "files").mkdir()
        (chart / "Chart.yaml").write_text(CHART_YAML)
        (chart / "values.yaml").write_text(VALUES_YAML)
        (chart / "files" / "config.yaml").write_text(DEFAULT_CONFIG)
        (chart / "templates" / "config-map.yaml").write_text(CONFIG_MAP)
        manifests = helm_python.Chart.load(str(chart)).render(
            values, name=RELEASE, namespace="nats", is_install=True
        )
    doc = yaml.safe_load(manifests["nats/templates/config-map.yaml"])
    return doc["data"]["nats.conf"]


def merge(base, layer):
    """Helm's merging of several values files: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def pod_env(env_values, secrets, pod_name="nats-0", prefix=""):
    """The environment the chart gives a container: its own SERVER_NAME (nats container only)
    and `env` entries, literal or `valueFrom.secretKeyRef` read from `secrets` (Secret name ->
    key -> value). A reference to a missing Secret or key fails like a pod that cannot start."""
    env = {"POD_NAME": pod_name, "SERVER_NAME": f"{prefix}{pod_name}"}
    for name, value in (env_values or {}).items():
        if isinstance(value, str):
            env[name] = value
            continue
        ref = value["valueFrom"]["secretKeyRef"]
        try:
            env[name] = secrets[ref["name"]][ref["key"]]
        except KeyError as err:
            raise KeyError(f"env {name}: Secret {ref['name']} has no key {ref['key']}") from err
    return env
