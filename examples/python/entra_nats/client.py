"""A nats-py client that keeps working when the NATS credentials minted for its token expire.

entra-callout mints NATS credentials that expire with the access token (or earlier, at the
policy's ``max_ttl``); nats-server then closes the connection with
``-ERR 'User Authentication Expired'``. nats-py 2.x treats every ``-ERR`` except
"stale connection" and permission violations as final: the client ends CLOSED, its token
callback is never called again and later publishes raise ``ConnectionClosedError``.
:class:`RotatingClient` therefore owns the connection's lifetime itself:

* **Before expiry (make before break).** Shortly before the token expires (``refresh_margin``,
  by default a fifth of the token's lifetime, at most 4 minutes -- less than azure-identity's own
  5-minute refresh window, so ``get_token`` returns a new token) it gets a fresh token, opens a
  second connection, subscribes there, switches publishing to it and only then drains the old
  one. Subscribers see no gap; they may see a message twice during the overlap, which the
  subscription callback filters out by its ``Nats-Msg-Id`` header.
* **After the server closed it** (credentials that expired early because the policy's ``max_ttl``
  is shorter than the token, a clock off by more than the margin, an admin revoking the user):
  the closed callback opens a new connection with a fresh token, retrying with backoff, and
  restores every subscription. Messages published to a subscription's subjects while no
  connection exists are not seen by that subscriber (core NATS delivers at most once).

Publishing guarantees (:meth:`RotatingClient.publish`):

* ``publish`` returns once the message is in the client's outbox. The outbox is bounded; when
  it is full, ``publish`` waits -- it never drops.
* A message leaves the outbox only after a PING/PONG round trip on the connection that carried
  it has completed, i.e. nats-server has processed it. When the connection fails first, the
  message is sent again, in order, on the next connection: **at least once** to the server,
  never silently dropped; a repeat carries the same ``Nats-Msg-Id`` (a JetStream stream
  deduplicates on it, :meth:`RotatingClient.subscribe` does too).
* Not covered: a message nats-server refuses (a permissions violation -- reported to
  ``on_error``, not retried); messages still in the outbox when the process dies (``close()``
  waits for the outbox and raises :class:`UndeliveredError` naming how many are left); and
  delivery to subscribers that are not connected at that moment (use JetStream for that).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import os
import time
import uuid
from typing import Any, Awaitable, Callable, Optional

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from .credentials import credential_from_env, scope_from_env, seconds_left

log = logging.getLogger("entra_nats")

MSG_ID = "Nats-Msg-Id"
# nats-server 2.15 writes it in lowercase, older servers capitalised.
EXPIRED = "user authentication expired"
# azure-identity refreshes a cached token when less than 5 minutes are left; rotating earlier
# than that would get the same token back.
MAX_REFRESH_MARGIN = 240.0


class UndeliveredError(Exception):
    """``close()`` gave up while messages were still in the outbox."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} message(s) not delivered to nats-server before close")
        self.count = count


@dataclasses.dataclass
class _Pending:
    subject: str
    payload: bytes
    headers: dict[str, str]


@dataclasses.dataclass
class _Subscription:
    subject: str
    queue: str
    cb: Callable[[Msg], Awaitable[None]]
    dedupe: bool
    seen: "collections.OrderedDict[str, None]" = dataclasses.field(
        default_factory=collections.OrderedDict
    )


class _Connection:
    """One nats-py connection and the token it presents."""

    def __init__(self, owner: "RotatingClient", token: Any) -> None:
        self.owner = owner
        self.token = token
        self.nc = NATS()
        self.connected_at = time.time()
        self.retired = False

    def token_for_connect(self) -> str:
        # nats-py calls this on its own reconnects (a network failure): hand it a token that
        # still has its refresh margin left. Synchronous, as nats-py wants it; it runs rarely.
        if seconds_left(self.token) < self.owner.margin_for(self.token):
            self.token = self.owner.credential.get_token(self.owner.scope)
        self.connected_at = time.time()
        return self.token.token

    def due(self) -> float:
        """When this connection should be replaced."""
        expires = float(self.token.expires_on)
        if self.owner.max_credential_lifetime is not None:
            expires = min(expires, self.connected_at + self.owner.max_credential_lifetime)
        return expires - self.owner.margin_for(self.token)


class RotatingClient:
    """A NATS connection through entra-callout that outlives its access tokens.

    ``credential`` is any azure-identity style credential (``get_token(scope)``), ``scope`` the
    NATS API's (``api://nats-auth/.default``). ``max_credential_lifetime`` (seconds): set it to
    the binding's ``max_ttl`` when that is shorter than the tokens' lifetime, so the connection is
    replaced before nats-server closes it. ``rotate=False`` turns the proactive replacement off
    (only the after-close path remains; the tests use it to cross a real expiry).
    """

    def __init__(
        self,
        servers: str | list[str],
        credential: Any,
        scope: str,
        *,
        name: str,
        refresh_margin: Optional[float] = None,
        max_credential_lifetime: Optional[float] = None,
        rotate: bool = True,
        outbox_limit: int = 10_000,
        on_error: Optional[Callable[[Exception], Awaitable[None]]] = None,
    ) -> None:
        self.servers = servers
        self.credential = credential
        self.scope = scope
        self.name = name
        self.refresh_margin = refresh_margin
        self.max_credential_lifetime = max_credential_lifetime
        self.rotate = rotate
        self.on_error = on_error
        self._outbox_limit = outbox_limit
        self._outbox: collections.deque[_Pending] = collections.deque()
        self._outbox_changed = asyncio.Condition()
        self._subs: list[_Subscription] = []
        self._current: Optional[_Connection] = None
        self._ready = asyncio.Event()
        self._swap = asyncio.Lock()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._replacing: Optional[asyncio.Task[None]] = None
        # Counters the tests and the examples print.
        self.rotations = 0
        self.replacements = 0
        self.expired_closes = 0
        self.resent = 0
        self.disconnects = 0
        self.reconnects = 0

    # -- lifetime -----------------------------------------------------------------------------

    def margin_for(self, token: Any) -> float:
        if self.refresh_margin is not None:
            return self.refresh_margin
        lifetime = max(0.0, token.expires_on - time.time())
        return min(MAX_REFRESH_MARGIN, max(0.5, lifetime / 5))

    async def start(self) -> None:
        """Connects for the first time; raises when that fails (a refused token, no server)."""
        conn = await self._open()
        self._current = conn
        self._ready.set()
        self._tasks.append(asyncio.create_task(self._send_loop(), name=f"{self.name}-sender"))
        self._tasks.append(asyncio.create_task(self._rotate_loop(), name=f"{self.name}-rotator"))

    async def close(self, timeout: float = 10.0) -> None:
        """Waits (up to ``timeout``) until the outbox is empty, then drains the connection.

        Raises :class:`UndeliveredError` when messages are left.
        """
        try:
            await asyncio.wait_for(self.flush_outbox(), timeout)
        except asyncio.TimeoutError:
            pass
        self._stopping = True
        async with self._outbox_changed:
            self._outbox_changed.notify_all()
        for task in self._tasks + ([self._replacing] if self._replacing else []):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._current is not None:
            self._current.retired = True
            await _drain(self._current.nc)
        if self._outbox:
            raise UndeliveredError(len(self._outbox))

    # -- publishing ---------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, headers: Optional[dict[str, str]] = None
    ) -> str:
        """Queues a message (waiting while the outbox is full); returns its ``Nats-Msg-Id``."""
        headers = dict(headers or {})
        msg_id = headers.setdefault(MSG_ID, uuid.uuid4().hex)
        async with self._outbox_changed:
            await self._outbox_changed.wait_for(
                lambda: len(self._outbox) < self._outbox_limit or self._stopping
            )
            if self._stopping:
                raise RuntimeError("publish after close")
            self._outbox.append(_Pending(subject, payload, headers))
            self._outbox_changed.notify_all()
        return msg_id

    async def flush_outbox(self) -> None:
        """Returns once nats-server has processed everything published so far."""
        async with self._outbox_changed:
            await self._outbox_changed.wait_for(lambda: not self._outbox)

    async def _send_loop(self) -> None:
        while True:
            async with self._outbox_changed:
                await self._outbox_changed.wait_for(lambda: self._outbox or self._stopping)
                if self._stopping:
                    return
                batch = list(itertools.islice(self._outbox, 256))
            await self._ready.wait()
            conn = self._current
            assert conn is not None
            try:
                for m in batch:
                    await conn.nc.publish(m.subject, m.payload, headers=m.headers)
                # PONG follows every PUB before it: the server has processed the batch.
                await conn.nc.flush(timeout=5)
            except Exception as e:  # noqa: BLE001 -- every failure means "send again"
                log.info("%s: publish of %d message(s) not confirmed (%r); resending", self.name, len(batch), e)
                self.resent += len(batch)
                await asyncio.sleep(0.05)
                continue
            async with self._outbox_changed:
                for _ in batch:
                    self._outbox.popleft()
                self._outbox_changed.notify_all()

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(
        self,
        subject: str,
        cb: Callable[[Msg], Awaitable[None]],
        queue: str = "",
        dedupe: bool = True,
    ) -> None:
        """Subscribes now and on every later connection. With ``dedupe`` a message whose
        ``Nats-Msg-Id`` was seen among the last 100,000 is skipped (repeats come from resends and
        from the overlap while connections are swapped)."""
        sub = _Subscription(subject, queue, cb, dedupe)
        self._subs.append(sub)
        if self._current is not None:
            await self._subscribe_on(self._current, sub)
            await self._current.nc.flush(timeout=5)

    async def _subscribe_on(self, conn: _Connection, sub: _Subscription) -> None:
        async def deliver(msg: Msg) -> None:
            if sub.dedupe:
                msg_id = (msg.headers or {}).get(MSG_ID)
                if msg_id is not None:
                    if msg_id in sub.seen:
                        return
                    sub.seen[msg_id] = None
                    if len(sub.seen) > 100_000:
                        sub.seen.popitem(last=False)
            await sub.cb(msg)

        await conn.nc.subscribe(sub.subject, queue=sub.queue, cb=deliver)

    # -- connections --------------------------------------------------------------------------

    async def _open(self) -> _Connection:
        token = await asyncio.to_thread(self.credential.get_token, self.scope)
        conn = _Connection(self, token)

        async def closed() -> None:
            await self._closed(conn)

        async def disconnected() -> None:
            if not conn.retired:
                self.disconnects += 1

        async def reconnected() -> None:
            # nats-py reconnected by itself (a dropped socket, or the server's expiry close
            # arriving as a lost connection), presenting a token from token_for_connect.
            self.reconnects += 1

        async def error(e: Exception) -> None:
            if self.on_error is not None:
                await self.on_error(e)
            else:
                log.warning("%s: %s", self.name, e)

        await conn.nc.connect(
            servers=self.servers,
            name=self.name,
            token=conn.token_for_connect,
            closed_cb=closed,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
        )
        for sub in self._subs:
            await self._subscribe_on(conn, sub)
        await conn.nc.flush(timeout=5)
        return conn

    async def _closed(self, conn: _Connection) -> None:
        last = conn.nc.last_error
        if last is not None and EXPIRED in str(last).lower():
            self.expired_closes += 1
        if conn.retired or self._stopping or conn is not self._current:
            return
        log.info("%s: connection closed by the server (%s); reconnecting with a fresh token", self.name, last)
        self._ready.clear()
        if self._replacing is None or self._replacing.done():
            self._replacing = asyncio.create_task(self._replace(conn))

    async def _replace(self, dead: _Connection) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                async with self._swap:
                    if self._current is not dead:
                        return
                    fresh = await self._open()
                    dead.retired = True
                    self._current = fresh
                    self.replacements += 1
                    self._ready.set()
                return
            except Exception as e:  # noqa: BLE001 -- keep trying: the server or issuer may be back
                log.warning("%s: reconnect failed (%r); retrying in %.1fs", self.name, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _rotate_loop(self) -> None:
        while self.rotate:
            conn = self._current
            if conn is None or not self._ready.is_set():
                await asyncio.sleep(0.1)
                continue
            wait = conn.due() - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            try:
                async with self._swap:
                    if self._current is not conn:
                        continue
                    fresh = await self._open()
                    conn.retired = True
                    self._current = fresh
                    self.rotations += 1
                log.info("%s: rotated to a connection with a fresh token", self.name)
                # Unsubscribes, delivers what the old subscriptions still hold, flushes pending
                # publishes, closes.
                await _drain(conn.nc)
            except Exception as e:  # noqa: BLE001 -- the after-close path still covers us
                log.warning("%s: rotation failed (%r); retrying", self.name, e)
                await asyncio.sleep(0.5)


async def _drain(nc: NATS) -> None:
    try:
        if not nc.is_closed:
            await nc.drain()
    except Exception as e:  # noqa: BLE001 -- a connection being dropped may already be gone
        log.debug("drain: %r", e)


async def connect_from_env(name: str, **kwargs: Any) -> RotatingClient:
    """A started :class:`RotatingClient` configured from the environment: ``NATS_URL``
    (default ``nats://127.0.0.1:4222``, comma-separated for a cluster), the credential of
    ``ENTRA_NATS_CREDENTIAL`` and ``ENTRA_NATS_SCOPE``, and ``ENTRA_NATS_MAX_CREDENTIAL_LIFETIME``
    (seconds, the policy's ``max_ttl``)."""
    lifetime = os.environ.get("ENTRA_NATS_MAX_CREDENTIAL_LIFETIME")
    client = RotatingClient(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(","),
        credential_from_env(),
        scope_from_env(),
        name=name,
        max_credential_lifetime=float(lifetime) if lifetime else None,
        **kwargs,
    )
    await client.start()
    return client


__all__ = ["RotatingClient", "UndeliveredError", "connect_from_env", "MSG_ID"]
