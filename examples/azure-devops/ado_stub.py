"""A local stand-in for Azure DevOps' "Pipelines - Runs - Run Pipeline" REST call, for tests and
`entra-callout dev`. It checks what the real service would need and answers like it:

    POST /{organization}/{project}/_apis/pipelines/{pipelineId}/runs?api-version=7.1
    Authorization: Bearer <Entra access token whose aud is Azure DevOps' resource id>
    {"templateParameters": {"image": ..., "tag": ..., "requestedBy": ...}}

The token is decoded WITHOUT verifying its signature (this is a stub: it checks the request's
shape and that the caller asked Entra for the right resource, not who signed it).

    python3 examples/azure-devops/ado_stub.py --port 8500      # prints every accepted run
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import re
import threading
from urllib.parse import parse_qs, urlsplit

AZURE_DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
RUNS_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs$")
PARAMETERS = {"image", "tag", "requestedBy"}


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check(path: str, headers, body: bytes) -> dict:
    """The accepted run's record, or Refused with the status Azure DevOps would answer."""
    url = urlsplit(path)
    m = RUNS_PATH.match(url.path)
    if not m:
        raise Refused(404, f"not a Run Pipeline path: {url.path}")
    if parse_qs(url.query).get("api-version") != ["7.1"]:
        raise Refused(400, "api-version must be 7.1")
    auth = headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise Refused(401, "no bearer token")
    try:
        token = claims(auth.removeprefix("Bearer "))
    except (IndexError, ValueError):
        raise Refused(401, "the bearer token is not a JWT") from None
    if token.get("aud") not in (AZURE_DEVOPS_RESOURCE, f"api://{AZURE_DEVOPS_RESOURCE}"):
        raise Refused(401, f"token audience {token.get('aud')!r} is not Azure DevOps ({AZURE_DEVOPS_RESOURCE})")
    if not headers.get("Content-Type", "").startswith("application/json"):
        raise Refused(415, "Content-Type must be application/json")
    try:
        request = json.loads(body)
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    params = request.get("templateParameters") if isinstance(request, dict) else None
    if not isinstance(params, dict) or set(params) != PARAMETERS or not all(
        isinstance(v, str) and v for v in params.values()
    ):
        raise Refused(400, f"templateParameters must be non-empty strings {sorted(PARAMETERS)}")
    return {**m.groupdict(), "templateParameters": params, "caller": token.get("oid"),
            "tenant": token.get("tid")}


class Stub:
    """Serves on 127.0.0.1:port (0: any free port) in a thread; `runs` lists accepted runs."""

    def __init__(self, port: int = 0, echo: bool = False) -> None:
        self.runs: list[dict] = []
        self.refusals: list[str] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    run = check(self.path, self.headers, body)
                except Refused as e:
                    stub.refusals.append(str(e))
                    return self.answer(e.status, {"message": str(e)})
                run["id"] = len(stub.runs) + 1
                stub.runs.append(run)
                if echo:
                    print(json.dumps(run), flush=True)
                base = f"http://{self.headers.get('Host')}/{run['org']}/{run['project']}"
                self.answer(200, {"id": run["id"], "state": "inProgress",
                                  "templateParameters": run["templateParameters"],
                                  "_links": {"web": {"href": f"{base}/_build/results?buildId={run['id']}"}}})

            def answer(self, status: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Azure DevOps Run Pipeline stub (DEV-ONLY)")
    parser.add_argument("--port", type=int, default=8500)
    args = parser.parse_args()
    stub = Stub(args.port, echo=True)
    print(f"Azure DevOps stub on {stub.url}: set AZURE_DEVOPS_URL={stub.url}/contoso", flush=True)
    try:
        stub.thread.join()
    except KeyboardInterrupt:
        stub.close()


if __name__ == "__main__":
    main()
