import { invitationKeys } from "@/hooks/queries/invitations";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { PendingInvitations } from "./PendingInvitations";

afterEach(cleanup);

const invitation = {
  id: "00000000-0000-0000-0000-00000000000f",
  tenant_id: "00000000-0000-0000-0000-0000000000bb",
  tenant_name: "globex",
  role: "developer",
  invited_by_email: "admin@globex.example",
  created_at: "2026-12-04T08:00:00Z",
  expires_at: "2026-12-11T08:00:00Z",
};

describe("PendingInvitations", () => {
  it("shows each invitation with its tenant, role and who sent it, to accept or decline", () => {
    renderSignedIn(<PendingInvitations />, meAs("viewer", ["self", "invitations:respond"]), "/", [
      [invitationKeys.mine, [invitation]],
    ]);
    const row = screen.getByTestId("invitation-globex");
    expect(row.textContent).toContain("globex invites you as Developer");
    expect(row.textContent).toContain("admin@globex.example");
    expect(screen.getByRole("button", { name: "Accept" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Decline" })).toBeTruthy();
  });

  it("shows nothing when there is nothing to answer", () => {
    renderSignedIn(<PendingInvitations />, meAs("viewer", ["self", "invitations:respond"]), "/", [
      [invitationKeys.mine, []],
    ]);
    expect(screen.queryByText("Invitations to other tenants")).toBeNull();
  });
});
