// Modal dialogs (the WAI-ARIA dialog pattern) on the native <dialog>: showModal() makes the rest
// of the page inert (focus stays inside), Escape closes, the title labels the dialog, and focus
// returns to the control that opened it. A closed dialog leaves the DOM with whatever it showed.

import { h, uid } from "./dom.js";

/**
 * Open a modal dialog in `root` (the console's shadow root).
 * build(dialog, close) returns the content; close(value) closes it and resolves the promise.
 * `initial` picks the element to focus first (default: the first field or button).
 */
export function openDialog(root, { title, build, initial, describedBy }) {
  const opener = root.activeElement ?? document.activeElement;
  const titleId = uid("dialog-title");
  const dialog = h("dialog", { "aria-labelledby": titleId, class: "dialog" });
  return new Promise((resolve) => {
    let result;
    const close = (value) => {
      result = value;
      dialog.close();
    };
    dialog.append(h("h2", { id: titleId, text: title }), build(dialog, close));
    if (describedBy) dialog.setAttribute("aria-describedby", describedBy);
    dialog.addEventListener("close", () => {
      dialog.remove(); // a secret shown in it goes with it
      if (opener && opener.isConnected) opener.focus();
      resolve(result);
    });
    root.append(dialog);
    dialog.showModal();
    const first = initial?.(dialog) ?? dialog.querySelector("input, select, textarea, button");
    first?.focus();
  });
}

/**
 * Ask before something that cannot be undone. Resolves true when confirmed.
 * Focus starts on Cancel: Enter alone never destroys anything.
 */
export function confirmDialog(root, { title, paragraphs, confirm, danger = true }) {
  const bodyId = uid("dialog-body");
  return openDialog(root, {
    title,
    describedBy: bodyId,
    initial: (dialog) => dialog.querySelector("[data-cancel]"),
    build: (dialog, close) =>
      h(
        "div",
        {},
        h("div", { id: bodyId }, paragraphs.map((text) => h("p", {}, text))),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", "data-cancel": true, class: "secondary", text: "Cancel", onclick: () => close(false) }),
          h("button", { type: "button", class: danger ? "danger" : "primary", text: confirm, onclick: () => close(true) }),
        ),
      ),
  });
}
