"""Access tokens for NATS: azure-identity in Azure, ``entra-callout dev token`` locally.

Both are ``azure.core.credentials.TokenCredential``-shaped (``get_token(*scopes) -> AccessToken``),
so the client code is the same in Azure ML and on a laptop; which one is used is configuration:

``ENTRA_NATS_CREDENTIAL``
    ``azure`` (default): ``azure.identity.DefaultAzureCredential`` -- the managed identity of an
    Azure ML compute, workload identity in AKS, ``az login`` on a workstation.
    ``dev``: :class:`DevTokenCredential`, which runs ``NATS_TOKEN_COMMAND`` (for example
    ``entra-callout dev token --role Ml.Vision.Producer``). DEV-ONLY: those tokens are signed with
    a public key that only ``entra-callout dev`` trusts.
``ENTRA_NATS_SCOPE``
    The scope asked for, default ``api://nats-auth/.default`` (the NATS API's App ID URI).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
from typing import Any

from azure.core.credentials import AccessToken

DEFAULT_SCOPE = "api://nats-auth/.default"


class CredentialConfigError(Exception):
    """The environment does not say how to get a token."""


def jwt_expiry(token: str) -> int:
    """The ``exp`` of a JWT, read WITHOUT verifying its signature.

    Only used to schedule a refresh; entra-callout verifies every token it is given.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a JWT with an exp claim: {e}") from None


class DevTokenCredential:
    """DEV-ONLY: a TokenCredential whose tokens come from ``entra-callout dev token ...``.

    Every call runs the command, so every connection gets a token with a fresh lifetime.
    The scope is ignored: the dev issuer's tokens always name the example NATS API.
    """

    def __init__(self, command: str) -> None:
        if not command.strip():
            raise CredentialConfigError("NATS_TOKEN_COMMAND is empty")
        self._argv = shlex.split(command)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        done = subprocess.run(self._argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"token command {self._argv[0]} exited with {done.returncode}: {done.stderr.strip()}"
            )
        token = done.stdout.strip()
        return AccessToken(token, jwt_expiry(token))

    def close(self) -> None:
        pass


def credential_from_env(env: dict[str, str] | None = None) -> Any:
    """The credential ``ENTRA_NATS_CREDENTIAL`` selects (see the module documentation)."""
    env = dict(os.environ) if env is None else env
    kind = env.get("ENTRA_NATS_CREDENTIAL", "azure")
    if kind == "dev":
        command = env.get("NATS_TOKEN_COMMAND")
        if not command:
            raise CredentialConfigError(
                "ENTRA_NATS_CREDENTIAL=dev needs NATS_TOKEN_COMMAND, e.g. "
                "'entra-callout dev token --role Ml.Vision.Producer'"
            )
        return DevTokenCredential(command)
    if kind == "azure":
        # Imported here so that a missing azure-identity only matters where it is used.
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    raise CredentialConfigError(f"ENTRA_NATS_CREDENTIAL={kind!r}: expected azure or dev")


def scope_from_env(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get("ENTRA_NATS_SCOPE", DEFAULT_SCOPE)


def seconds_left(token: AccessToken) -> float:
    return token.expires_on - time.time()
