"""The Azure DevOps delivery pipeline against `entra-callout dev`: the "Publish image-ready" step
of examples/azure-devops/azure-pipelines.yml runs for real (its script, its env, with an `az` that
answers from `entra-callout dev token`), and the deploy trigger queues the release through the
Run Pipeline REST call to a local stub that checks the request and the token's audience."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "examples" / "azure-devops"))

from ado_stub import AZURE_DEVOPS_RESOURCE, Stub  # noqa: E402

PIPELINE = ROOT / "examples" / "azure-devops" / "azure-pipelines.yml"
BUILD_AGENT = "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92"
DEPLOY_TRIGGER = "2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f"
EXAMPLES = pathlib.Path(os.environ.get("ENTRA_CALLOUT_BIN", ROOT / "target/debug/entra-callout")).parent / "examples"


def publish_step() -> tuple[dict, dict]:
    doc = yaml.safe_load(PIPELINE.read_text())
    steps = [s for stage in doc["stages"] for job in stage["jobs"] for s in job["steps"]]
    [step] = [s for s in steps if s.get("displayName") == "Publish image-ready"]
    return doc, step


def expand(value: str, variables: dict[str, str]) -> str:
    """Azure Pipelines' `$(name)` macro expansion, nested as far as the variables need."""
    for _ in range(5):
        value = re.sub(r"\$\(([A-Za-z0-9_.]+)\)", lambda m: variables[m.group(1)], value)
    return value


def fake_az(directory: pathlib.Path, dev) -> None:
    """An `az` that answers the one call the step makes, as the build's service principal."""
    az = directory / "az"
    az.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$*" != "account get-access-token --resource api://nats-auth --query accessToken -o tsv" ]; then\n'
        '  echo "fake az: unexpected call: az $*" >&2; exit 2\n'
        "fi\n"
        f"exec {dev.token_command('--app', BUILD_AGENT)}\n"
    )
    az.chmod(0o755)


def test_the_pipeline_step_publishes_and_the_trigger_queues_the_release(dev, tmp_path):
    doc, step = publish_step()
    assert step["task"] == "AzureCLI@2"
    inputs = step["inputs"]
    assert (inputs["azureSubscription"], inputs["scriptType"], inputs["scriptLocation"]) == (
        "$(serviceConnection)", "bash", "inlineScript")
    script = inputs["inlineScript"]
    # Only the step's env carries pipeline values, so bash runs exactly this text.
    assert "$(" not in script, script

    # The variables of a run: the file's, a queue-time natsUrl, and predefined ones.
    sources = tmp_path / "s"
    (sources / "target/release/examples").mkdir(parents=True)
    (sources / "target/release/examples/build-agent").symlink_to(EXAMPLES / "build-agent")
    variables = {**doc["variables"], "natsUrl": dev.nats_url, "Build.BuildId": "2",
                 "Build.SourcesDirectory": str(sources)}
    env = {name: expand(str(value), variables) for name, value in step["env"].items()}
    assert env["IMAGE_VERSION"] == "1.4.2"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_az(bin_dir, dev)

    stub = Stub()
    trigger = subprocess.Popen(
        [str(EXAMPLES / "deploy-trigger")],
        env=dict(os.environ, NATS_URL=dev.nats_url,
                 NATS_TOKEN_COMMAND=dev.token_command("--app", DEPLOY_TRIGGER),
                 AZURE_DEVOPS_URL=f"{stub.url}/contoso", AZURE_DEVOPS_PROJECT="web",
                 AZURE_DEVOPS_PIPELINE_ID="42",
                 AZURE_DEVOPS_TOKEN_COMMAND=dev.token_command(
                     "--app", DEPLOY_TRIGGER, "--audience", AZURE_DEVOPS_RESOURCE)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert "waiting for contoso.web.deploy.image-ready.v1.*" in trigger.stdout.readline()
        step_run = subprocess.run(
            ["bash", "-c", script],
            env=dict(os.environ, **env, PATH=f"{bin_dir}:{os.environ['PATH']}"),
            capture_output=True, text=True, timeout=60,
        )
        assert step_run.returncode == 0, step_run.stderr
        assert step_run.stdout.strip() == (
            f"published contoso.web.deploy.image-ready.v1.{BUILD_AGENT} "
            "for contoso.azurecr.io/web/frontend:1.4.2")
        deadline = time.monotonic() + 30
        while not stub.runs:
            assert time.monotonic() < deadline, f"no run queued; refusals: {stub.refusals}"
            time.sleep(0.05)
        assert stub.refusals == []
        [run] = stub.runs
        assert run == {
            "org": "contoso", "project": "web", "pipeline": "42", "id": 1,
            "templateParameters": {
                "image": "contoso.azurecr.io/web/frontend@sha256:" + "4f" * 32,
                "tag": "1.4.2",
                "requestedBy": BUILD_AGENT,
            },
            # The trigger's own identity, with a token for Azure DevOps.
            "caller": DEPLOY_TRIGGER,
            "tenant": "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41",
        }
        lines = [trigger.stdout.readline().strip() for _ in range(2)]
        assert lines[1] == f"queued release run 1 ({stub.url}/contoso/web/_build/results?buildId=1)", lines
    finally:
        trigger.terminate()
        trigger.wait(timeout=10)
        stub.close()


def test_the_stub_refuses_a_token_for_another_resource(dev):
    import urllib.error
    import urllib.request

    stub = Stub()
    try:
        nats_token = subprocess.run(dev.token_command("--app", DEPLOY_TRIGGER).split(),
                                    capture_output=True, text=True, check=True).stdout.strip()
        request = urllib.request.Request(
            f"{stub.url}/contoso/web/_apis/pipelines/42/runs?api-version=7.1",
            data=b'{"templateParameters": {"image": "a/b@sha256:x", "tag": "1", "requestedBy": "x"}}',
            headers={"Authorization": f"Bearer {nats_token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("the stub accepted a NATS API token")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        assert stub.refusals == [
            f"token audience '6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11' is not Azure DevOps ({AZURE_DEVOPS_RESOURCE})"]
    finally:
        stub.close()
