import { describe, expect, it } from "vitest";
import { createBody, eventsLabel, formFromChannel, updateBody } from "./channelForm";

const channel = {
  id: "c1",
  kind: "webhook" as const,
  target: "https://hooks.example.com/apiary",
  description: "ops",
  events: ["invoice.issued" as const],
  enabled: true,
  previous_secret_expires_at: null,
  created_at: "2026-12-01T10:00:00Z",
  updated_at: "2026-12-01T10:00:00Z",
};

describe("channel form", () => {
  it("makes a webhook's create body, trimmed", () => {
    const form = { ...formFromChannel(), target: " https://hooks.example.com/a " };
    expect(createBody(form)).toEqual({
      body: {
        kind: "webhook",
        target: "https://hooks.example.com/a",
        description: "",
        events: [],
        enabled: true,
      },
      error: null,
    });
  });

  it("stops a webhook without an http(s) URL and an e-mail without an address", () => {
    expect(createBody({ ...formFromChannel(), target: "ftp://x" }).error).toMatch(/^URL/);
    const email = { ...formFromChannel(), kind: "email" as const, target: "billing" };
    expect(createBody(email).error).toMatch(/^E-mail/);
    expect(createBody({ ...email, target: "billing@acme.example" }).error).toBeNull();
  });

  it("sends only what an edit changed", () => {
    const form = formFromChannel(channel);
    expect(updateBody(channel, form)).toEqual({ body: {}, error: null });
    expect(
      updateBody(channel, { ...form, events: ["invoice.issued", "payment.failed"], enabled: false })
        .body,
    ).toEqual({ events: ["invoice.issued", "payment.failed"], enabled: false });
    expect(updateBody(channel, { ...form, target: "nope" }).error).toMatch(/^URL/);
  });

  it("reads an empty event list as every alert", () => {
    expect(eventsLabel([])).toBe("all alerts");
    expect(eventsLabel(["payment.failed"])).toBe("Payment failed");
  });
});
