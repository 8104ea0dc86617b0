"""What `helm install` of both charts would run, minus Kubernetes: run by scripts/chart_test.py.

nats.conf comes from examples/helm/nats-values.yaml through the stand-in of the official chart
(nats_chart.py), the service's configuration and policies from charts/entra-callout rendered by
the Helm SDK. Both run from those files with only their paths rewritten to a temporary
directory (the pods' mounts), keys from `entra-callout keys init`, and the environment the pods
would have. Ports are set through values (nats.url, admin.port; config.nats.port and friends),
as an operator would, so parallel runs on one machine do not collide.

The identity provider is `entra-callout dev`'s issuer: the simplest honest one, because `dev
token` signs with the key it publishes and its discovery documents have Entra's shape. The
provider gets `authority:` pointing at it (a values override; everything else about the provider
is the chart's default). `dev` also starts a nats-server and service of its own; they are unused.
"""

import asyncio
import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import nats
import yaml

import nats_chart

CONTOSO = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41"
MOUNT = "/etc/entra-callout/"
PID_DIR = "/var/run/nats/"
KEYS_SECRET = "entra-callout-keys"
# What examples/helm/nats-values.yaml tells operators to run for nats-box's password.
BOX_PASSWORD_COMMAND = "(printf b; LC_ALL=C tr -dc A-Za-z0-9 </dev/urandom | head -c 39)"
# A writer role: the service places its subjects under the tenant's prefix (contoso.events.>).
POLICY = f"""version: 1
tenants:
  - name: contoso
    entra_tenants: [{CONTOSO}]
    account: APP
roles:
  - name: writer
    publish: {{ allow: ["events.>"] }}
    subscribe: {{ allow: ["events.>"] }}
bindings:
  - name: writers
    tenant: contoso
    roles: [writer]
    when: {{ kind: application, app_roles: [Nats.Writer] }}
"""
DEADLINE = 30  # seconds any one process gets to come up


def make_keys(binary, base):
    """The Secret both charts read: `keys init` plus nats-box's password, name -> text."""
    keys = base / "keys"
    subprocess.run([binary, "keys", "init", str(keys)], check=True, capture_output=True)
    (keys / "nats-box-password").write_text(
        subprocess.run(["sh", "-c", BOX_PASSWORD_COMMAND], check=True, capture_output=True, text=True).stdout
    )
    # As a secretKeyRef hands them to a container: the files' exact bytes (keys init ends its
    # files with a newline).
    return keys, {KEYS_SECRET: {p.name: p.read_text() for p in keys.iterdir()}}


def key_values(keys):
    """What an operator edits into nats-values.yaml: the public keys `keys init` printed."""
    callout = {
        "issuer": (keys / "issuer.pub").read_text().strip(),
        "xkey": (keys / "xkey.pub").read_text().strip(),
    }
    return {"config": {"merge": {"authorization": {"auth_callout": callout}}}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, process=None, log=None):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: exited {process.returncode}: {log.read_text() if log else ''}")
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not up within {DEADLINE}s: {log.read_text() if log else ''}")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def started(argv, log, env=None):
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def dev_issuer(binary, nats_server, base):
    """`entra-callout dev` on free ports; yields its issuer URL from the banner."""
    log = base / "dev.log"
    argv = [binary, "dev"] + [f"--{p}-port=0" for p in ("nats", "monitor", "issuer", "admin")]
    env = dict(os.environ, NATS_SERVER_BIN=nats_server)
    with started(argv, log, env) as process:
        found = []

        def banner():
            found[:] = re.findall(r"token issuer\s+(http://127\.0\.0\.1:\d+)", log.read_text())
            return bool(found)

        wait_for("entra-callout dev", banner, process, log)
        yield found[0]


def callout_values(issuer, nats_port, admin_port):
    provider = {
        "name": "contoso",
        "kind": "entra",
        "tenant": CONTOSO,
        "audiences": ["6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11", "api://nats-auth"],
        "authority": issuer,
    }
    return {
        "nats": {"url": f"nats://127.0.0.1:{nats_port}"},
        "admin": {"port": admin_port},
        "providers": [provider],
        "policies": {"files": {"e2e.yaml": POLICY}},
    }


async def clients(binary, nats_port, box_password):
    """The checks, as (ok, message) pairs."""
    url = f"nats://127.0.0.1:{nats_port}"
    results = []

    def token(*args):
        return subprocess.run([binary, "dev", "token", *args], check=True, capture_output=True, text=True).stdout.strip()

    errors = []

    async def on_error(err):
        errors.append(str(err))

    nc = await nats.connect(url, token=token("--role", "Nats.Writer"), error_cb=on_error, allow_reconnect=False)
    sub = await nc.subscribe("contoso.events.>")
    await nc.publish("contoso.events.e2e", b"hello")
    await nc.flush()
    try:
        msg = await sub.next_msg(timeout=5)
        results.append((msg.data == b"hello", f"allowed publish to contoso.events.e2e delivered: {msg.data!r}"))
    except nats.errors.TimeoutError:
        results.append((False, "allowed publish to contoso.events.e2e not delivered within 5s"))
    await nc.publish("contoso.admin.e2e", b"nope")
    await nc.flush()
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    refused = 'permissions violation for publish to "contoso.admin.e2e"'
    results.append(
        (any(refused in e.lower() for e in errors), f"publish to contoso.admin.e2e refused: {errors}")
    )
    await nc.close()

    # A token no policy binds (the role is not Nats.Writer): refused at connect.
    try:
        other = await nats.connect(
            url, token=token("--role", "Nats.Reader"), error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=0
        )
        await other.close()
        results.append((False, "a token without a matching policy connected"))
    except nats.errors.Error as err:
        results.append(("authorization violation" in str(err).lower(), f"token without a matching policy refused: {err!r}"))

    # nats-box and `helm test` (nats reply echo / nats request echo) as its auth user.
    box = await nats.connect(url, user="nats-box", password=box_password, allow_reconnect=False)
    async def respond(msg):
        await msg.respond(msg.data)

    echo = await box.subscribe("echo", cb=respond)
    reply = await box.request("echo", b"hi", timeout=5)
    results.append((reply.data == b"hi", f"nats-box user request-reply on echo: {reply.data!r}"))
    await echo.unsubscribe()
    await box.close()
    return results


def run(binary, nats_server, chart, render):
    """Yields (ok, message) for each check; raises when a process does not come up."""
    values = yaml.safe_load(nats_chart.VALUES_FILE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        keys, secrets = make_keys(binary, base)
        nats_port, admin_port = free_port(), free_port()
        ports = {"config": {p: {"port": free_port()} for p in ("monitor", "cluster")}}
        ports["config"]["nats"] = {"port": nats_port}
        conf = nats_chart.render_conf(values, key_values(keys), ports)
        conf_path = base / "nats.conf"
        conf_path.write_text(conf.replace(PID_DIR, f"{base}/"))
        env = dict(os.environ, **nats_chart.pod_env(values["container"]["env"], secrets))

        with contextlib.ExitStack() as stack:
            issuer = stack.enter_context(dev_issuer(binary, nats_server, base))
            log = base / "nats-server.log"
            server = stack.enter_context(started([nats_server, "-c", str(conf_path)], log, env))
            wait_for("nats-server", lambda: listening(nats_port), server, log)

            _, documents = render(chart, callout_values(issuer, nats_port, admin_port))
            maps = {d["metadata"]["name"]: d["data"] for _, d in documents if d.get("kind") == "ConfigMap"}
            (base / "config").mkdir()
            config_path = base / "config" / "config.yaml"
            config_path.write_text(maps["entra-callout"]["config.yaml"].replace(MOUNT, f"{base}/"))
            (base / "policies").mkdir()
            for name, text in maps["entra-callout-policies"].items():
                (base / "policies" / name).write_text(text)
            log = base / "service.log"
            service = stack.enter_context(started([binary, "serve", "--config", str(config_path)], log))
            wait_for("entra-callout serve", lambda: ready(admin_port), service, log)

            box_password = secrets[KEYS_SECRET]["nats-box-password"]
            return asyncio.run(clients(binary, nats_port, box_password))
