import { AppShell } from "@/components/Layout/AppShell";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { Can } from "./Can";

afterEach(cleanup);

describe("Can", () => {
  it("shows a write button to a role that holds the permission", () => {
    renderSignedIn(
      <Can permission="api_keys:write">
        <button type="button">Create API key</button>
      </Can>,
      meAs("developer", ["self", "api_keys:read", "api_keys:write"]),
    );
    expect(screen.getByRole("button", { name: "Create API key" })).toBeTruthy();
  });

  it("hides it from a viewer", () => {
    renderSignedIn(
      <Can permission="api_keys:write">
        <button type="button">Create API key</button>
      </Can>,
      meAs("viewer", ["self", "members:read"]),
    );
    expect(screen.queryByRole("button", { name: "Create API key" })).toBeNull();
  });
});

describe("AppShell navigation", () => {
  it("gives a viewer no settings pages it would be refused, and no admin", () => {
    renderSignedIn(<AppShell />, meAs("viewer", ["self", "members:read"]));
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect(nav.textContent).toContain("Members");
    expect(nav.textContent).not.toContain("API keys");
    expect(nav.textContent).not.toContain("Audit log");
    expect(nav.textContent).not.toContain("Cost analytics");
    expect(nav.textContent).not.toContain("Tenants");
  });

  it("gives a super admin the tenants page", () => {
    renderSignedIn(<AppShell />, meAs("super_admin", ["self", "tenants:manage", "usage:read"]));
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect(nav.textContent).toContain("Tenants");
    expect(nav.textContent).toContain("Cost analytics");
  });

  it("hides tenant pages from a super admin signed in without a tenant", () => {
    const platform = {
      ...meAs("super_admin", ["self", "tenants:manage", "usage:read", "api_keys:read"]),
      tenant_id: null,
    };
    renderSignedIn(<AppShell />, platform);
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect(nav.textContent).toContain("Tenants");
    expect(nav.textContent).not.toContain("API keys");
    expect(nav.textContent).not.toContain("Cost analytics");
  });
});
