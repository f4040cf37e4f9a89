import { providerKeys } from "@/hooks/queries/providers";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ProviderHealth } from "./ProviderHealth";

afterEach(cleanup);

const health = {
  providers: [
    {
      name: "azure-east",
      kind: "azure_openai",
      models: ["gpt-4o"],
      breaker: "open",
      consecutive_failures: 5,
      retry_in_s: 11.2,
    },
    {
      name: "claude",
      kind: "anthropic",
      models: ["claude-sonnet-4"],
      breaker: "closed",
      consecutive_failures: 0,
      retry_in_s: null,
    },
  ],
};

describe("ProviderHealth", () => {
  it("shows an open breaker with its failures and when it will try again", () => {
    renderSignedIn(<ProviderHealth />, meAs("viewer", ["self", "providers:read"]), "/", [
      [providerKeys.health, health],
    ]);
    const open = screen.getByTestId("provider-azure-east");
    expect(open.textContent).toContain("circuit open");
    expect(open.textContent).toContain("5 (retry in 12 s)");
    const closed = screen.getByTestId("provider-claude");
    expect(closed.textContent).toContain("healthy");
    expect(closed.textContent).not.toContain("retry");
  });

  it("is left out for a caller without the permission", () => {
    renderSignedIn(<ProviderHealth />, meAs("viewer", ["self"]), "/", [
      [providerKeys.health, health],
    ]);
    expect(screen.queryByText("Provider health")).toBeNull();
  });
});
