// The app's one modal dialog. A native <dialog> opened with showModal() (top layer, the page
// behind inert), plus what the element leaves to us or a browser without it lacks: focus
// moved in on open and kept in with Tab/Shift+Tab (Chromium lets Tab leave a modal dialog
// for the browser's own UI), the page behind marked `inert` and `aria-hidden`, Escape
// closing through `onClose` (so React state, not the element, decides what is open), and
// focus handed back to the control that opened it.
import { type ReactNode, useEffect, useId, useLayoutEffect, useRef, useState } from "react";
import { createPortal } from "react-dom";

const FOCUSABLE = [
  "a[href]",
  "area[href]",
  "button:not([disabled])",
  'input:not([disabled]):not([type="hidden"])',
  "select:not([disabled])",
  "textarea:not([disabled])",
  "iframe",
  "[contenteditable='true']",
  "[tabindex]:not([tabindex='-1'])",
].join(",");

/** The elements Tab may reach inside `root`, in document order. */
export function focusables(root: HTMLElement): HTMLElement[] {
  return Array.from(root.querySelectorAll<HTMLElement>(FOCUSABLE)).filter(
    (element) => !element.closest("[hidden],[inert]") && element.tabIndex >= 0,
  );
}

// Open dialogs, innermost last: only the innermost one answers keys and holds focus.
const stack: HTMLElement[] = [];

/** A modal dialog: Escape, the backdrop or the close button close it. */
export function Dialog({
  open,
  title,
  onClose,
  children,
}: {
  open: boolean;
  title: string;
  onClose: () => void;
  children: ReactNode;
}) {
  return open ? (
    <Modal title={title} onClose={onClose}>
      {children}
    </Modal>
  ) : null;
}

function Modal({
  title,
  onClose,
  children,
}: {
  title: string;
  onClose: () => void;
  children: ReactNode;
}) {
  const titleId = useId();
  const dialogRef = useRef<HTMLDialogElement>(null);
  const bodyRef = useRef<HTMLDivElement>(null);
  const closeRef = useRef(onClose);
  // A host of its own under <body>, so the app's root can be made inert around it.
  const [host] = useState(() => document.createElement("div"));

  useEffect(() => {
    closeRef.current = onClose;
  }, [onClose]);

  useLayoutEffect(() => {
    const dialog = dialogRef.current;
    if (!dialog) return;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    document.body.appendChild(host);

    // Everything else under <body> leaves the tab order and the accessibility tree. What is
    // inert already (the page behind an outer dialog) is left for its owner to restore.
    const covered: Element[] = [];
    for (const element of Array.from(document.body.children)) {
      if (element === host || element.hasAttribute("inert")) continue;
      element.setAttribute("inert", "");
      element.setAttribute("aria-hidden", "true");
      covered.push(element);
    }

    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    stack.push(dialog);

    const content = bodyRef.current;
    const first =
      dialog.querySelector<HTMLElement>("[autofocus]") ??
      (content ? focusables(content)[0] : undefined) ??
      focusables(dialog)[0] ??
      dialog;
    first.focus();

    const innermost = () => stack[stack.length - 1] === dialog;
    const onKeyDown = (event: KeyboardEvent) => {
      if (!innermost()) return;
      if (event.key === "Escape") {
        // Also stops the browser's own close, which would leave React thinking it is open.
        event.preventDefault();
        event.stopPropagation();
        closeRef.current();
        return;
      }
      if (event.key !== "Tab") return;
      const items = focusables(dialog);
      const active = document.activeElement;
      const inside = active instanceof Node && dialog.contains(active);
      if (items.length === 0) {
        event.preventDefault();
        dialog.focus();
      } else if (event.shiftKey && (!inside || active === items[0] || active === dialog)) {
        event.preventDefault();
        items[items.length - 1]?.focus();
      } else if (!event.shiftKey && (!inside || active === items[items.length - 1])) {
        event.preventDefault();
        items[0]?.focus();
      }
    };
    // Focus that lands outside anyway (a script, a browser without `inert`) comes back.
    const onFocusIn = (event: FocusEvent) => {
      if (!innermost() || !(event.target instanceof Node) || dialog.contains(event.target)) return;
      (focusables(dialog)[0] ?? dialog).focus();
    };
    // A close request that is not a key press (e.g. a platform back gesture).
    const onCancel = (event: Event) => {
      event.preventDefault();
      closeRef.current();
    };
    document.addEventListener("keydown", onKeyDown, true);
    document.addEventListener("focusin", onFocusIn, true);
    dialog.addEventListener("cancel", onCancel);

    return () => {
      document.removeEventListener("keydown", onKeyDown, true);
      document.removeEventListener("focusin", onFocusIn, true);
      dialog.removeEventListener("cancel", onCancel);
      stack.splice(stack.indexOf(dialog), 1);
      if (typeof dialog.close === "function" && dialog.open) dialog.close();
      for (const element of covered) {
        element.removeAttribute("inert");
        element.removeAttribute("aria-hidden");
      }
      host.remove();
      if (opener?.isConnected) opener.focus();
    };
  }, [host]);

  return createPortal(
    // The element spans the viewport, so a click on it rather than in the panel is a click
    // on the backdrop. Keyboard users close with Escape or the close button.
    // biome-ignore lint/a11y/useKeyWithClickEvents: Escape is handled for the whole dialog
    <dialog
      ref={dialogRef}
      aria-modal="true"
      aria-labelledby={titleId}
      tabIndex={-1}
      className="fixed inset-0 z-50 m-0 hidden h-full max-h-none w-full max-w-none items-center justify-center bg-black/40 p-4 outline-none open:flex backdrop:bg-transparent"
      onClick={(event) => {
        if (event.target === event.currentTarget) closeRef.current();
      }}
    >
      <div className="relative max-h-full w-full max-w-lg overflow-y-auto rounded-lg bg-white p-6 text-slate-900 shadow-xl">
        <div className="mb-4 flex items-start justify-between gap-4">
          <h2 id={titleId} className="text-lg font-semibold">
            {title}
          </h2>
          <button
            type="button"
            aria-label="Close"
            className="-m-1 rounded p-1 text-slate-500 hover:bg-slate-100 hover:text-slate-900"
            onClick={() => closeRef.current()}
          >
            <span aria-hidden="true">×</span>
          </button>
        </div>
        <div ref={bodyRef}>{children}</div>
      </div>
    </dialog>,
    host,
  );
}
