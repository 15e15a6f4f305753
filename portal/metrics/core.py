"""The metrics themselves: Authelia's, the portal's own, what moves them, and their text.

One `Metrics` per application, with its own CollectorRegistry (never prometheus_client's global
one, so two apps in one process count apart). What moves the counters:

- every request, through `seams.request_middleware` (outermost): `authelia_request` (code, method),
  `authelia_request_duration` (code), and `authelia_authz` (code) on the auth_request routes;
- every audit event, through the one sink `Metrics.audit_sink` wraps around deps.audit: the
  sign-in, second-factor and reset counters (`Metrics.record_event` maps event to counter);
- the user backend and the notifier, through `seams.MeteredUsers` and `MeteredNotifier`: calls and
  errors by operation, mail deliveries by result;
- at scrape time: the outbox's pending messages and its oldest one's age (read from storage
  asynchronously before the text is written), the LDAP pool's waits.

Authelia's names, labels and buckets are its internal/metrics/prometheus.go: a Go collector with
Subsystem "authelia", whose counters carry no `_total` (the community Grafana dashboard queries
`authelia_request`, `authelia_authn`, ...); `exposition` writes them so. The portal's own carry
the `portal_` prefix and the usual `_total`. A label never holds a username, address or token:
every label value comes from a fixed set (`_bounded`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portal.audit import AuditSink
from portal.clock import Clock
from portal.errors import InvalidTokenReason
from portal.storage.base import OutboxStore

log = logging.getLogger("portal.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Authelia's buckets (internal/metrics/prometheus.go), in seconds.
REQUEST_BUCKETS = (
    .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60,
)  # fmt: skip
AUTHN_BUCKETS = (
    .0005, .00075, .001, .005, .01, .025, .05, .075, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9,
    1, 5, 10, 15, 30, 60,
)  # fmt: skip
# Route names whose answers are authz verdicts (portal/routes.py): Authelia's RecordAuthz.
AUTHZ_ROUTES = frozenset({"auth_request", "verify"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
SECOND_FACTORS = frozenset({"totp", "webauthn"})
RESET_REJECTIONS = frozenset({*get_args(InvalidTokenReason), "policy", "second_factor"})
THROTTLE_SCOPES = frozenset({"ip", "identifier", "global"})
USER_OPERATIONS = (
    "get_user",
    "check_password",
    "set_password",
    "healthy",
    "password_state",
    "clear_lockout",
)
OUTBOX_REFRESH_TIMEOUT = 2.0  # seconds a scrape waits for storage before showing the last values


def _bounded(value: object, allowed: Iterable[str]) -> str:
    """Return value as a label value if it is one of `allowed`, else "other" (bounded labels)."""
    text = str(value)
    return text if text in allowed else "other"


def _flag(value: bool) -> str:
    return "true" if value else "false"


class _AutheliaCounter:
    """A counter vector written as Authelia's Go client writes it: samples without `_total`."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str) -> None:
        """Add one to the series with these label values (in `labels` order)."""
        self.values[values] = self.values.get(values, 0.0) + 1.0

    def metric(self) -> Metric:
        """Return the family with one sample per series, named exactly `name`."""
        family = Metric(self.name, self.documentation, "counter")
        for values, count in sorted(self.values.items()):
            family.add_sample(self.name, dict(zip(self.labels, values, strict=True)), count)
        return family


class PoolStats(Protocol):
    """What a connection pool tells of its waits (portal/users/ldap/pool.py's LdapPool)."""

    @property
    def waits(self) -> int:
        """Calls that found every connection busy and waited for one."""
        ...

    @property
    def wait_seconds(self) -> float:
        """Seconds those calls waited in all."""
        ...


class Metrics(Collector):
    """Every metric of one application, in a registry of its own.

    `clock` reads the outbox's oldest message's age; `outbox` is the store it is read from.
    """

    def __init__(self, *, outbox: OutboxStore, clock: Clock) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._outbox, self._clock = outbox, clock
        self._pending: float | None = None
        self._oldest_age: float | None = None
        self._pool: PoolStats | None = None
        registry = self.registry
        # As Authelia registers the Go process collector: the process_* series, and Python's.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.request = _AutheliaCounter(
            "authelia_request", "The number of HTTP requests processed.", ("code", "method")
        )
        self.authz = _AutheliaCounter(
            "authelia_authz", "The number of authz requests processed.", ("code",)
        )
        self.authn = _AutheliaCounter(
            "authelia_authn", "The number of 1FA authentications processed.", ("success", "banned")
        )
        self.authn_passkey = _AutheliaCounter(
            "authelia_authn_passkey",
            "The number of Passkey authentications processed.",
            ("success",),
        )
        self.authn_second_factor = _AutheliaCounter(
            "authelia_authn_second_factor",
            "The number of 2FA authentications processed.",
            ("success", "banned", "type"),
        )
        self._authelia = (
            self.request,
            self.authz,
            self.authn,
            self.authn_passkey,
            self.authn_second_factor,
        )
        registry.register(self)
        self.request_duration = Histogram(
            "authelia_request_duration",
            "The time a HTTP request takes to process in seconds.",
            ("code",),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.authn_duration = Histogram(
            "authelia_authn_duration",
            "The time an authentication attempt takes in seconds.",
            ("success",),
            buckets=AUTHN_BUCKETS,
            registry=registry,
        )
        self.reset_requested = Counter(
            "portal_reset_requested",
            "Password resets requested (known and unknown identifiers alike).",
            registry=registry,
        )
        self.reset_throttled = Counter(
            "portal_reset_throttled",
            "Password reset requests dropped or refused by a rate limit, by its scope.",
            ("scope",),
            registry=registry,
        )
        self.reset_mailed = Counter("portal_reset_mailed", "Reset links mailed.", registry=registry)
        self.reset_completed = Counter(
            "portal_reset_completed", "Passwords set through a reset link.", registry=registry
        )
        self.reset_rejected = Counter(
            "portal_reset_rejected",
            "Reset links or forms refused, by reason.",
            ("reason",),
            registry=registry,
        )
        self.mail = Counter(
            "portal_mail_deliveries",
            "Mails handed to the notifier, by result (sent or failed).",
            ("result",),
            registry=registry,
        )
        self.user_calls = Counter(
            "portal_user_backend_calls",
            "Calls to the user backend, by operation.",
            ("operation",),
            registry=registry,
        )
        self.user_errors = Counter(
            "portal_user_backend_errors",
            "Calls to the user backend that raised an error, by operation.",
            ("operation",),
            registry=registry,
        )
        # Children made once: the request path looks them up in a dict, no lock, no labels().
        self._durations: dict[int, Any] = {}

    # -- requests ------------------------------------------------------------------------------

    def record_request(self, status: int, method: str, seconds: float, *, authz: bool) -> None:
        """Count one answered request: its status code, method (bounded) and duration."""
        code = str(status)
        self.request.inc(code, method if method in METHODS else "other")
        duration = self._durations.get(status)
        if duration is None:
            duration = self._durations[status] = self.request_duration.labels(code)
        duration.observe(seconds)
        if authz:
            self.authz.inc(code)

    # -- audit events --------------------------------------------------------------------------

    def audit_sink(self, inner: AuditSink) -> AuditSink:
        """Return a sink that hands each event to `inner` (the log) and then counts it."""

        def sink(event: str, /, **fields: object) -> None:
            inner(event, **fields)
            try:
                self.record_event(event, fields)
            except Exception:  # a metric never breaks the flow it watches
                log.exception("metrics: counting the audit event %s failed", event)

        return sink

    def record_event(self, event: str, fields: Mapping[str, object]) -> None:
        """Move the counters one audit event moves (see the README's Metrics section)."""
        method = fields.get("method")
        duration = fields.get("duration")
        if event in ("signin_succeeded", "signin_failed", "signin_banned", "reauthenticated"):
            success = event in ("signin_succeeded", "reauthenticated")
            if method == "passkey":
                self.authn_passkey.inc(_flag(success))
                return
            self.authn.inc(_flag(success), _flag(event == "signin_banned"))
            if isinstance(duration, int | float):
                self.authn_duration.labels(_flag(success)).observe(float(duration))
        elif event == "signin_password_change_required":
            # The password was right but opens no session: counted as Authelia counts a refusal.
            self.authn.inc("false", "false")
        elif event in ("second_factor_succeeded", "second_factor_failed"):
            success = event == "second_factor_succeeded"
            if fields.get("purpose") == "passkey_login":
                # A passkey login's assertion: its success is the signin_succeeded that follows.
                if not success:
                    self.authn_passkey.inc("false")
                return
            kind = _bounded(method, SECOND_FACTORS)
            banned = fields.get("reason") == "banned"
            self.authn_second_factor.inc(_flag(success), _flag(banned), kind)
        elif event in ("reset_requested", "reset_decoy_requested"):
            # SECURITY: one series for both, so the metrics do not tell who has an account.
            self.reset_requested.inc()
        elif event == "reset_throttled":
            self.reset_throttled.labels(_bounded(fields.get("scope"), THROTTLE_SCOPES)).inc()
        elif event == "reset_mail_sent":
            self.reset_mailed.inc()
        elif event == "reset_completed":
            self.reset_completed.inc()
        elif event == "reset_rejected":
            self.reset_rejected.labels(_bounded(fields.get("reason"), RESET_REJECTIONS)).inc()

    # -- read at scrape time -------------------------------------------------------------------

    def watch_pool(self, pool: PoolStats | None) -> None:
        """Report this pool's waits (the LDAP backend's) at every scrape."""
        self._pool = pool

    async def refresh(self) -> None:
        """Read the outbox's size and oldest message from storage; keep the last values on
        failure or past OUTBOX_REFRESH_TIMEOUT (a slow database never stalls a scrape)."""
        try:
            async with asyncio.timeout(OUTBOX_REFRESH_TIMEOUT):
                pending = await self._outbox.outbox_pending()
                oldest = await self._outbox.outbox_oldest()
        except Exception as exc:
            log.warning("metrics: reading the outbox failed: %s", type(exc).__name__)
            return
        self._pending = float(pending)
        self._oldest_age = 0.0 if oldest is None else max(0.0, self._clock.now() - oldest)

    def collect(self) -> Iterator[Metric]:
        """Yield Authelia's counters and the values read at scrape time."""
        for counter in self._authelia:
            yield counter.metric()
        if self._pending is not None and self._oldest_age is not None:
            yield GaugeMetricFamily(
                "portal_outbox_pending",
                "Messages queued in the outbox (mail not yet delivered), as of the last scrape.",
                value=self._pending,
            )
            yield GaugeMetricFamily(
                "portal_outbox_oldest_age_seconds",
                "Age of the oldest message in the outbox in seconds (0 when empty).",
                value=self._oldest_age,
            )
        if self._pool is not None:
            waits = Metric(
                "portal_ldap_pool_waits",
                "Calls that found every LDAP connection busy and waited for one.",
                "counter",
            )
            waits.add_sample("portal_ldap_pool_waits_total", {}, float(self._pool.waits))
            yield waits
            seconds = Metric(
                "portal_ldap_pool_wait_seconds",
                "Seconds calls waited for an LDAP connection, in all.",
                "counter",
            )
            seconds.add_sample("portal_ldap_pool_wait_seconds_total", {}, self._pool.wait_seconds)
            yield seconds

    def exposition(self) -> bytes:
        """Return every metric in Prometheus's text format (0.0.4), Authelia's counters named
        as its Go client names them (prometheus_client would add `_total` to their headers)."""
        text = generate_latest(self.registry).decode()
        names = "|".join(counter.name for counter in self._authelia)
        text = re.sub(rf"^# (HELP|TYPE) ({names})_total ", r"# \1 \2 ", text, flags=re.MULTILINE)
        return text.encode()
