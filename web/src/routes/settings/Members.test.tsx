import { invitationKeys } from "@/hooks/queries/invitations";
import { memberKeys } from "@/hooks/queries/members";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, fireEvent, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { Members } from "./Members";

afterEach(cleanup);

const page = (items: unknown[]) => ({ items, total: items.length, limit: 25, offset: 0 });
const colleague = {
  id: "m2",
  user_id: "00000000-0000-0000-0000-000000000002",
  email: "dev@acme.example",
  name: "Dev",
  role: "viewer",
  created_at: "2026-12-01T10:00:00Z",
};

describe("Members", () => {
  it("offers exactly the roles the server says the caller may grant", () => {
    // A rule the dashboard could not guess from the role alone: what /auth/me lists is what
    // the pickers offer.
    const me = meAs("developer", ["self", "members:read", "members:write"]);
    me.grantable_roles = ["billing_admin", "viewer"];
    renderSignedIn(<Members />, me, "/settings/members", [
      [memberKeys.page(0), page([colleague])],
      [invitationKeys.sentPage(0), page([])],
    ]);
    const rowPicker = screen.getByLabelText("Role of dev@acme.example") as HTMLSelectElement;
    expect([...rowPicker.options].map((option) => option.value)).toEqual([
      "billing_admin",
      "viewer",
    ]);
    fireEvent.click(screen.getByRole("button", { name: "Add member" }));
    const dialog = screen.getByRole("dialog", { name: "Add member" });
    const options = within(dialog).getAllByRole("option") as HTMLOptionElement[];
    expect(options.map((option) => option.value)).toEqual(["billing_admin", "viewer"]);
  });
});
