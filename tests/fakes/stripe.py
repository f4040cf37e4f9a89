"""A local Stripe on 127.0.0.1 speaking Stripe's wire format, for the payment tests.

`FakeStripe` is an aiohttp server the official `stripe` SDK talks to (point
`APIARY_BILLING__STRIPE__API_BASE` at `base_url`). It serves the endpoints Apiary uses:
customers, subscriptions (create, retrieve, update), invoices (create, retrieve, add_lines,
finalize, pay, void) as Stripe does: form-encoded bodies in bracket notation
(`lines[0][amount]=4900`, `metadata[apiary_tenant_id]=...`), `Authorization: Bearer
sk_test_...`, JSON objects with `id`, `object` and `created`, Stripe's error envelope
(`{"error": {"type", "message", "code", "param"}}`) and status codes, and `Idempotency-Key`
replayed as Stripe does (the same key and parameters: the first answer again; other
parameters: a 400 `idempotency_error`).

Tests make it fail (`fail(...)`: a status with `Stripe-Should-Retry`, until `recover()`),
read what it holds (`customers`, `invoices`, `subscriptions`, `requests`), and build
webhook deliveries signed as Stripe signs them (`event(...)`, `sign(...)`: header
`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>">`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

Json: TypeAlias = dict[str, Any]

API_KEY = "sk_test_apiary_fake_stripe"
WEBHOOK_SECRET = "whsec_apiary_fake_stripe_signing_secret"
_SEGMENT = re.compile(r"\[([^\]]*)\]")


def decode_form(body: str) -> Json:
    """Stripe's bracket notation into nested dicts and lists (values stay strings)."""
    root: Json = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head = key.split("[", 1)[0]
        path = [head, *_SEGMENT.findall(key[len(head) :])]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    decoded: Json = _lists(root)
    return decoded


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _lists(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send with `payload`."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    params: Json
    idempotency_key: str | None
    replayed: bool


@dataclass(slots=True)
class _Failure:
    status: int
    should_retry: bool
    remaining: int | None  # None: until recover()
    path: str | None  # only requests whose path contains this


@dataclass(slots=True)
class _Stored:
    params: Json
    status: int
    body: Json


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"error": {"type": type_, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


@dataclass
class FakeStripe:
    api_key: str = API_KEY
    customers: dict[str, Json] = field(default_factory=dict)
    subscriptions: dict[str, Json] = field(default_factory=dict)
    invoices: dict[str, Json] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _idempotent: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    _failure: _Failure | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _runner: web.AppRunner | None = None
    _url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeStripe:
        app = web.Application()
        post, get = app.router.add_post, app.router.add_get
        post("/v1/customers", self._route(self._create_customer))
        get("/v1/customers/{id}", self._route(self._get(self.customers, "customer")))
        post("/v1/subscriptions", self._route(self._create_subscription))
        get("/v1/subscriptions/{id}", self._route(self._get(self.subscriptions, "subscription")))
        post("/v1/subscriptions/{id}", self._route(self._update_subscription))
        post("/v1/invoices", self._route(self._create_invoice))
        get("/v1/invoices/{id}", self._route(self._get(self.invoices, "invoice")))
        post("/v1/invoices/{id}/add_lines", self._route(self._add_lines))
        post("/v1/invoices/{id}/finalize", self._route(self._finalize))
        post("/v1/invoices/{id}/pay", self._route(self._pay))
        post("/v1/invoices/{id}/void", self._route(self._void))
        app.router.add_route("*", "/{tail:.*}", self._route(self._unknown))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self._url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeStripe:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        assert self._url is not None, "FakeStripe was never started"
        return self._url

    # -- what tests do --------------------------------------------------------------------

    def fail(
        self,
        status: int = 500,
        *,
        times: int | None = None,
        should_retry: bool = False,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests (None: all, until `recover()`) whose path
        contains `path` (None: any) with `status` in Stripe's error shape;
        `Stripe-Should-Retry` tells the SDK whether to retry."""
        self._failure = _Failure(status, should_retry, times, path)

    def forget_idempotency_keys(self) -> None:
        """What Stripe does 24 hours after a key was first used."""
        self._idempotent.clear()

    def recover(self) -> None:
        self._failure = None

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def event(
        self, event_type: str, obj: Json, *, created: int | None = None, event_id: str | None = None
    ) -> bytes:
        """A webhook payload (a v1 snapshot event) carrying `obj` as it is now."""
        return json.dumps(
            {
                "id": event_id or f"evt_{secrets.token_hex(12)}",
                "object": "event",
                "api_version": "2026-10-28.endive",
                "created": int(time.time()) if created is None else created,
                "type": event_type,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "data": {"object": json.loads(json.dumps(obj))},
            }
        ).encode()

    def set_invoice_status(self, invoice_id: str, status: str) -> Json:
        """Stripe's side moving on (a customer paid, a charge failed): the invoice as now."""
        invoice = self.invoices[invoice_id]
        invoice["status"] = status
        if status == "paid":
            invoice["amount_paid"] = invoice["amount_due"]
            invoice["amount_remaining"] = 0
        return invoice

    # -- plumbing -------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):014d}{secrets.token_hex(4)}"

    def _route(self, handler: Any) -> Any:
        async def serve(request: web.Request) -> web.Response:
            raw = (await request.read()).decode()
            params = (
                decode_form(raw) if request.method == "POST" else decode_form(request.query_string)
            )
            key = request.headers.get("Idempotency-Key")
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                shown = auth.removeprefix("Bearer ")[:8]
                return self._error(
                    StripeError(
                        401,
                        f"Invalid API Key provided: {shown}***",
                        code="api_key_invalid" if auth else None,
                    )
                )
            failure = self._failure
            if failure is not None and (failure.path is None or failure.path in request.path):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failure = None
                self.requests.append(Recorded(request.method, request.path, params, key, False))
                kind = "rate_limit_error" if failure.status == 429 else "api_error"
                response = self._error(
                    StripeError(
                        failure.status, "Stripe is unavailable (a test said so)", type_=kind
                    )
                )
                response.headers["Stripe-Should-Retry"] = (
                    "true" if failure.should_retry else "false"
                )
                return response
            # One request at a time, as Stripe serializes requests with one idempotency key.
            async with self._lock:
                if key is not None and request.method == "POST":
                    stored = self._idempotent.get((request.path, key))
                    if stored is not None:
                        self.requests.append(
                            Recorded(request.method, request.path, params, key, True)
                        )
                        if stored.params != params:
                            return self._error(
                                StripeError(
                                    400,
                                    "Keys for idempotent requests can only be used with the same "
                                    "parameters they were first used with.",
                                    type_="idempotency_error",
                                )
                            )
                        return self._json(stored.body, stored.status, replayed=True)
                self.requests.append(Recorded(request.method, request.path, params, key, False))
                try:
                    status, body = 200, handler(request, params)
                except StripeError as error:
                    status, body = error.status, error.body
                if key is not None and request.method == "POST":
                    self._idempotent[(request.path, key)] = _Stored(params, status, body)
                return self._json(body, status)

        return serve

    @staticmethod
    def _json(body: Json, status: int = 200, *, replayed: bool = False) -> web.Response:
        headers = {
            "Request-Id": f"req_{secrets.token_hex(7)}",
            "Stripe-Version": "2026-10-28.endive",
        }
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return web.json_response(body, status=status, headers=headers)

    def _error(self, error: StripeError) -> web.Response:
        return self._json(error.body, error.status)

    def _find(self, table: dict[str, Json], kind: str, object_id: str) -> Json:
        found = table.get(object_id)
        if found is None:
            raise StripeError(
                404, f"No such {kind}: '{object_id}'", code="resource_missing", param="id"
            )
        return found

    def _get(self, table: dict[str, Json], kind: str) -> Any:
        def handler(request: web.Request, params: Json) -> Json:
            return self._find(table, kind, request.match_info["id"])

        return handler

    def _unknown(self, request: web.Request, params: Json) -> Json:
        raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}).")

    @staticmethod
    def _required(params: Json, name: str) -> Any:
        if name not in params or params[name] == "":
            raise StripeError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )
        return params[name]

    # -- customers ------------------------------------------------------------------------

    def _create_customer(self, request: web.Request, params: Json) -> Json:
        customer = {
            "id": self._new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "name": params.get("name"),
            "email": params.get("email"),
            "metadata": params.get("metadata", {}),
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return customer

    # -- subscriptions --------------------------------------------------------------------

    def _item(self, subscription_id: str, price: str) -> Json:
        return {
            "id": self._new_id("si"),
            "object": "subscription_item",
            "subscription": subscription_id,
            "price": {"id": price, "object": "price"},
            "quantity": 1,
        }

    def _create_subscription(self, request: web.Request, params: Json) -> Json:
        customer = self._required(params, "customer")
        self._find(self.customers, "customer", customer)
        items = self._required(params, "items")
        subscription_id = self._new_id("sub")
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "created": int(time.time()),
            "customer": customer,
            "status": "active",
            "collection_method": params.get("collection_method", "charge_automatically"),
            "metadata": params.get("metadata", {}),
            "items": {
                "object": "list",
                "data": [self._item(subscription_id, item["price"]) for item in items],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={subscription_id}",
            },
        }
        self.subscriptions[subscription_id] = subscription
        return subscription

    def _update_subscription(self, request: web.Request, params: Json) -> Json:
        subscription = self._find(self.subscriptions, "subscription", request.match_info["id"])
        for change in params.get("items", []):
            for item in subscription["items"]["data"]:
                if item["id"] == change.get("id") and "price" in change:
                    item["price"] = {"id": change["price"], "object": "price"}
        subscription["metadata"].update(params.get("metadata", {}))
        return subscription

    # -- invoices -------------------------------------------------------------------------

    def _create_invoice(self, request: web.Request, params: Json) -> Json:
        customer = self._required(params, "customer")
        self._find(self.customers, "customer", customer)
        invoice_id = self._new_id("in")
        invoice: Json = {
            "id": invoice_id,
            "object": "invoice",
            "created": int(time.time()),
            "customer": customer,
            "currency": params.get("currency", "usd"),
            "status": "draft",
            "number": None,
            "description": params.get("description"),
            "collection_method": params.get("collection_method", "charge_automatically"),
            "auto_advance": params.get("auto_advance") == "true",
            "metadata": params.get("metadata", {}),
            "lines": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "subtotal": 0,
            "total": 0,
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "livemode": False,
        }
        self.invoices[invoice_id] = invoice
        return invoice

    def _draft(self, request: web.Request) -> Json:
        invoice = self._find(self.invoices, "invoice", request.match_info["id"])
        if invoice["status"] != "draft":
            raise StripeError(
                400,
                f"You can only modify draft invoices. This invoice is {invoice['status']}.",
                code="invoice_not_editable",
            )
        return invoice

    def _add_lines(self, request: web.Request, params: Json) -> Json:
        invoice = self._draft(request)
        lines = self._required(params, "lines")
        for line in lines:
            try:
                amount = int(line["amount"])
            except (KeyError, ValueError):
                raise StripeError(
                    400, "Invalid integer: lines[][amount]", param="lines[0][amount]"
                ) from None
            invoice["lines"]["data"].append(
                {
                    "id": self._new_id("il"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": invoice["currency"],
                    "description": line.get("description"),
                    "invoice": invoice["id"],
                }
            )
        total = sum(line["amount"] for line in invoice["lines"]["data"])
        invoice.update(
            subtotal=total, total=total, amount_due=max(0, total), amount_remaining=max(0, total)
        )
        return invoice

    def _finalize(self, request: web.Request, params: Json) -> Json:
        invoice = self._draft(request)
        invoice["number"] = (
            f"FAKE-{len([i for i in self.invoices.values() if i['number']]) + 1:04d}"
        )
        # Stripe marks an invoice with nothing to pay paid as it finalizes it.
        invoice["status"] = "open" if invoice["amount_due"] > 0 else "paid"
        if "auto_advance" in params:
            invoice["auto_advance"] = params["auto_advance"] == "true"
        return invoice

    def _pay(self, request: web.Request, params: Json) -> Json:
        invoice = self._find(self.invoices, "invoice", request.match_info["id"])
        if invoice["status"] != "open":
            raise StripeError(
                400, f"Invoice is already {invoice['status']}.", code="invoice_not_open"
            )
        return self.set_invoice_status(invoice["id"], "paid")

    def _void(self, request: web.Request, params: Json) -> Json:
        invoice = self._find(self.invoices, "invoice", request.match_info["id"])
        if invoice["status"] not in ("open", "uncollectible"):
            raise StripeError(
                400, f"You can only void open invoices; this one is {invoice['status']}."
            )
        return self.set_invoice_status(invoice["id"], "void")


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    """A running `FakeStripe`, empty, fresh for each test."""
    async with FakeStripe() as server:
        yield server
