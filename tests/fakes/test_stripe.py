"""The local Stripe speaks Stripe's wire format: the official SDK is the judge (its typed
errors come from the status and the error envelope, its objects from `object`), and a
webhook signed by the fake verifies with the SDK's own check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import stripe

from tests.fakes.stripe import API_KEY, WEBHOOK_SECRET, FakeStripe, decode_form, sign

# The SDK's httpx client posts its form body as `data=` bytes, which httpx deprecates; the
# SDK's to change, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
async def sdk(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.HTTPXClient()
    yield stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake_stripe.base_url},
        http_client=http,
        max_network_retries=0,
    )
    await http.close_async()  # type: ignore[no-untyped-call]


def test_bracket_notation_decodes_into_nested_objects_and_lists() -> None:
    body = (
        "customer=cus_1&lines[0][amount]=4900&lines[0][description]=Team+plan"
        "&lines[1][amount]=-810&metadata[apiary_tenant_id]=t-1&auto_advance=false"
    )
    assert decode_form(body) == {
        "customer": "cus_1",
        "lines": [{"amount": "4900", "description": "Team plan"}, {"amount": "-810"}],
        "metadata": {"apiary_tenant_id": "t-1"},
        "auto_advance": "false",
    }


async def test_the_sdk_creates_an_invoice_with_lines_and_finalizes_it(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    customer = await sdk.v1.customers.create_async(params={"name": "acme"})
    assert isinstance(customer, stripe.Customer)
    assert customer.id.startswith("cus_")
    draft = await sdk.v1.invoices.create_async(
        params={"customer": customer.id, "currency": "eur", "metadata": {"n": "INV-1"}}
    )
    assert isinstance(draft, stripe.Invoice)
    assert draft.id is not None
    await sdk.v1.invoices.add_lines_async(
        draft.id,
        params={"lines": [{"amount": 4410, "description": "fee"}, {"amount": -810}]},
    )
    final = await sdk.v1.invoices.finalize_invoice_async(draft.id)
    assert (final.status, final.total, final.currency) == ("open", 3600, "eur")
    assert [line.amount for line in final.lines.data] == [4410, -810]
    assert final.metadata is not None
    assert final.metadata.to_dict() == {"n": "INV-1"}
    paid = await sdk.v1.invoices.pay_async(draft.id)
    assert (paid.status, paid.amount_remaining) == ("paid", 0)


async def test_an_idempotency_key_replays_the_first_answer_and_refuses_other_params(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    first = await sdk.v1.customers.create_async(
        params={"name": "acme"}, options={"idempotency_key": "k-1"}
    )
    again = await sdk.v1.customers.create_async(
        params={"name": "acme"}, options={"idempotency_key": "k-1"}
    )
    assert again.id == first.id
    assert len(fake_stripe.customers) == 1
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await sdk.v1.customers.create_async(
            params={"name": "globex"}, options={"idempotency_key": "k-1"}
        )


async def test_errors_come_in_stripes_envelope_and_status(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await sdk.v1.invoices.retrieve_async("in_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError, match="Missing required param: customer"):
        await sdk.v1.invoices.create_async(params={"currency": "usd"})
    wrong_key = stripe.StripeClient(
        "sk_test_wrong", base_addresses={"api": fake_stripe.base_url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError):
        await wrong_key.v1.customers.create_async(params={"name": "x"})
    fake_stripe.fail(429, times=1)
    with pytest.raises(stripe.RateLimitError):
        await sdk.v1.customers.create_async(params={"name": "x"})
    fake_stripe.fail(500)
    with pytest.raises(stripe.APIError) as down:
        await sdk.v1.customers.create_async(params={"name": "x"})
    assert down.value.http_status == 500


def test_a_webhook_signed_by_the_fake_verifies_with_the_sdk(fake_stripe: FakeStripe) -> None:
    payload = fake_stripe.event("invoice.paid", {"id": "in_1", "object": "invoice"})
    event = stripe.Webhook.construct_event(payload, sign(payload), WEBHOOK_SECRET)
    assert (event.type, event.data.object["id"]) == ("invoice.paid", "in_1")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, secret="whsec_x"), WEBHOOK_SECRET)
