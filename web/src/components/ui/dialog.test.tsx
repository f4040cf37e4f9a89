import { Dialog } from "@/components/ui/dialog";
import { act, fireEvent, render, screen } from "@testing-library/react";
import { useState } from "react";
import { afterEach, describe, expect, it } from "vitest";

function Page() {
  const [open, setOpen] = useState(false);
  return (
    <main>
      <button type="button" onClick={() => setOpen(true)}>
        Edit
      </button>
      <button type="button">Elsewhere</button>
      <Dialog open={open} title="Edit thing" onClose={() => setOpen(false)}>
        <form>
          <label htmlFor="name">Name</label>
          <input id="name" />
          <label htmlFor="note">Note</label>
          <input id="note" />
          <button type="button">Save</button>
        </form>
      </Dialog>
    </main>
  );
}

/** Open the dialog as a person would: focus its button, then activate it. */
function openDialog() {
  const opener = screen.getByRole("button", { name: "Edit" });
  act(() => opener.focus());
  fireEvent.click(opener);
  return { opener, dialog: screen.getByRole("dialog", { name: "Edit thing" }) };
}

const tab = (shiftKey = false) =>
  fireEvent.keyDown(document.activeElement ?? document.body, { key: "Tab", shiftKey });

describe("Dialog", () => {
  afterEach(() => {
    document.body.innerHTML = "";
  });

  it("is a labelled modal dialog that takes focus to its first field", () => {
    render(<Page />);
    const { dialog } = openDialog();
    expect(dialog.getAttribute("aria-modal")).toBe("true");
    expect(document.activeElement).toBe(screen.getByLabelText("Name"));
  });

  it("makes the page behind inert and hidden from assistive tech until it closes", () => {
    const { container } = render(<Page />);
    openDialog();
    expect(container.hasAttribute("inert")).toBe(true);
    expect(container.getAttribute("aria-hidden")).toBe("true");
    // The page's buttons are out of the accessibility tree while the dialog is open.
    expect(screen.queryByRole("button", { name: "Elsewhere" })).toBeNull();
    fireEvent.keyDown(document.activeElement ?? document.body, { key: "Escape" });
    expect(container.hasAttribute("inert")).toBe(false);
    expect(container.hasAttribute("aria-hidden")).toBe(false);
    screen.getByRole("button", { name: "Elsewhere" });
  });

  it("keeps Tab and Shift+Tab inside the dialog", () => {
    render(<Page />);
    const { dialog } = openDialog();
    const close = screen.getByRole("button", { name: "Close" });
    const save = screen.getByRole("button", { name: "Save" });
    act(() => save.focus());
    tab();
    expect(document.activeElement).toBe(close); // past the last control: back to the first
    tab(true);
    expect(document.activeElement).toBe(save); // before the first: round to the last
    // Focus sent outside by other means comes back in.
    act(() => screen.getByRole("button", { name: "Elsewhere", hidden: true }).focus());
    expect(dialog.contains(document.activeElement)).toBe(true);
  });

  it("closes on Escape and gives focus back to the button that opened it", () => {
    render(<Page />);
    const { opener, dialog } = openDialog();
    expect(dialog.contains(document.activeElement)).toBe(true);
    fireEvent.keyDown(screen.getByLabelText("Note"), { key: "Escape" });
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(document.activeElement).toBe(opener);
  });

  it("closes on the close button and on the backdrop, not on a click inside", () => {
    render(<Page />);
    openDialog();
    fireEvent.click(screen.getByLabelText("Name"));
    expect(screen.queryByRole("dialog")).not.toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Close" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    const { opener, dialog } = openDialog();
    fireEvent.click(dialog); // the element itself is the backdrop around the panel
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(document.activeElement).toBe(opener);
  });
});
