#!/usr/bin/env python3
"""Capture real authorization-callout requests from nats-server for the nats_jwt unit tests.

Run from the repository root with the project venv:

    /work/main/.tools/venv/bin/python scripts/capture-nats-fixtures.py [--nats-server PATH]

On the first run it generates a TEST-ONLY issuer account key and service xkey and writes them to
tests/data/nats/test-keys.json; later runs reuse them, so the captures stay consistent with the
keys. It then starts nats-server in config mode twice (plaintext, then with `xkey`), subscribes
to $SYS.REQ.USER.AUTH as the auth user, connects clients (token; user/password), saves each raw
request payload (plus the Nats-Server-Xkey header when sealed) and rejects them with an empty
reply.

`--responder CMD` instead answers every request with the output of CMD (request payload on stdin,
header value in $NATS_SERVER_XKEY, response bytes on stdout) and reports whether the client was
admitted; use it to check end to end that nats-server accepts responses built by our code.

Key generation is pure Python (ed25519 / X25519 public key derivation and nkey encoding) so the
script needs nothing beyond nats-py. The Rust tests cross-check the derived public keys.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import nats
from nats.errors import Error as NatsError

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "nats"
KEYS = DATA / "test-keys.json"
DEFAULT_SERVER = "/work/main/.tools/venv/bin/nats-server"

# Clearly fake client credentials; they end up (in plaintext) in the committed captures.
TEST_TOKEN = "test-token-not-a-secret"
TEST_USER = "alice"
TEST_PASS = "test-password-not-a-secret"

# --- nkeys (pure Python) -----------------------------------------------------------------------

PREFIX_SEED = 18 << 3
PREFIX_ACCOUNT = 0
PREFIX_CURVE = 23 << 3

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, as nkeys uses."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def encode_public(prefix: int, raw: bytes) -> str:
    body = bytes([prefix]) + raw
    return b32(body + crc16(body).to_bytes(2, "little"))


def encode_seed(prefix: int, raw: bytes) -> str:
    body = bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw
    return b32(body + crc16(body).to_bytes(2, "little"))


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x & 1) != sign:
        x = P - x
    return x


def _point_add(a, b):
    pa, pb = (a[1] - a[0]) * (b[1] - b[0]) % P, (a[1] + a[0]) * (b[1] + b[0]) % P
    c, d = 2 * a[3] * b[3] * D % P, 2 * a[2] * b[2] % P
    e, f, g, h = pb - pa, d - c, d + c, pb + pa
    return (e * f, g * h, f * g, e * h)


def _point_mul(s: int, point):
    acc = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            acc = _point_add(acc, point)
        point = _point_add(point, point)
        s >>= 1
    return acc


def ed25519_public(seed: bytes) -> bytes:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    gy = 4 * pow(5, P - 2, P) % P
    gx = _recover_x(gy, 0)
    x, y, z, _ = _point_mul(a, (gx, gy, 1, gx * gy % P))
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def x25519_public(seed: bytes) -> bytes:
    k = bytearray(seed)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    scalar = int.from_bytes(k, "little")
    x1, x2, z2, x3, z3, swap = 9, 1, 0, 9, 1, 0
    for t in reversed(range(255)):
        bit = (scalar >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % P, b * b % P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % P, c * b % P
        x3, z3 = (da + cb) ** 2 % P, x1 * (da - cb) ** 2 % P
        x2, z2 = aa * bb % P, e * (aa + 121665 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


def load_or_create_keys() -> dict:
    if KEYS.exists():
        return json.loads(KEYS.read_text())
    account, curve = secrets.token_bytes(32), secrets.token_bytes(32)
    keys = {
        "_warning": "TEST-ONLY keys for unit-test fixtures. Public in this repository; never use them anywhere else.",
        "issuer_account_seed": encode_seed(PREFIX_ACCOUNT, account),
        "issuer_account_public": encode_public(PREFIX_ACCOUNT, ed25519_public(account)),
        "service_xkey_seed": encode_seed(PREFIX_CURVE, curve),
        "service_xkey_public": encode_public(PREFIX_CURVE, x25519_public(curve)),
    }
    DATA.mkdir(parents=True, exist_ok=True)
    KEYS.write_text(json.dumps(keys, indent=2) + "\n")
    return keys


# --- nats-server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_config(port: int, issuer: str, xkey: str | None) -> str:
    xkey_line = f"    xkey: {xkey}\n" if xkey else ""
    return f"""listen: "127.0.0.1:{port}"
server_name: capture
max_control_line: 32KB
accounts {{
  AUTH {{ users: [ {{ user: auth, password: pwd }} ] }}
  APP {{}}
  SYS {{ users: [ {{ user: admin, password: admin }} ] }}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ auth, admin ]
{xkey_line}  }}
}}
"""


def start_server(binary: str, workdir: pathlib.Path, config: str, port: int) -> subprocess.Popen:
    conf = workdir / "server.conf"
    conf.write_text(config)
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "w")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"nats-server did not start; see {workdir / 'server.log'}")


async def run_clients(url: str, clients: list[dict], responder: str | None) -> list[tuple[bytes, str | None, bool]]:
    """Connects each client once; returns (payload, xkey header, admitted) per client."""
    captured: list[tuple[bytes, str | None]] = []

    async def on_request(msg):
        header = (msg.headers or {}).get("Nats-Server-Xkey")
        captured.append((msg.data, header))
        reply = b""
        if responder:
            env = dict(os.environ, NATS_SERVER_XKEY=header or "")
            done = subprocess.run(responder, shell=True, input=msg.data, capture_output=True, env=env)
            if done.returncode != 0:
                print(done.stderr.decode(errors="replace"), file=sys.stderr)
            reply = done.stdout
        await msg.respond(reply)

    service = await nats.connect(url, user="auth", password="pwd")
    await service.subscribe("$SYS.REQ.USER.AUTH", cb=on_request)
    await service.flush()
    results = []
    async def quiet(_err):
        pass  # the refusals are expected; the result is reported below

    for options in clients:
        before = len(captured)
        admitted = False
        try:
            client = await nats.connect(
                url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, error_cb=quiet, **options
            )
            admitted = True
            await client.close()
        except (NatsError, OSError, asyncio.TimeoutError):
            pass
        if len(captured) != before + 1:
            sys.exit(f"expected exactly one request for client {options!r}, got {len(captured) - before}")
        results.append((*captured[-1], admitted))
    await service.close()
    return results


def capture(binary: str, keys: dict, sealed: bool, clients: list[dict], responder: str | None):
    port = free_port()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="nats-capture-"))
    xkey = keys["service_xkey_public"] if sealed else None
    proc = start_server(binary, workdir, server_config(port, keys["issuer_account_public"], xkey), port)
    try:
        return asyncio.run(run_clients(f"nats://127.0.0.1:{port}", clients, responder))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-server", default=shutil.which("nats-server") or DEFAULT_SERVER)
    parser.add_argument("--responder", help="command that builds the response (see module doc)")
    args = parser.parse_args()

    keys = load_or_create_keys()
    token = {"token": TEST_TOKEN}
    userpass = {"user": TEST_USER, "password": TEST_PASS}

    plain = capture(args.nats_server, keys, False, [token, userpass], args.responder)
    sealed = capture(args.nats_server, keys, True, [token], args.responder)

    if args.responder:
        for name, (_, _, admitted) in zip(["plain token", "plain user/pass", "sealed token"], plain + sealed):
            print(f"{name}: {'ADMITTED' if admitted else 'REFUSED'}")
        return

    (token_req, token_hdr, _), (userpass_req, userpass_hdr, _) = plain
    (sealed_req, sealed_hdr, _), = sealed
    if token_hdr or userpass_hdr or not sealed_hdr:
        sys.exit("unexpected Nats-Server-Xkey header presence")
    (DATA / "request-plain-token.jwt").write_bytes(token_req)
    (DATA / "request-plain-userpass.jwt").write_bytes(userpass_req)
    (DATA / "request-sealed-token.bin").write_bytes(sealed_req)
    (DATA / "request-sealed-token.xkey-header").write_text(sealed_hdr)
    print(f"wrote captures to {DATA}")


if __name__ == "__main__":
    main()
