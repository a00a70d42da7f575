// Leaks: report a secret or token seen where it should not be (a repository, a ticket, a log).
// The service finds what the value stands for and acts by the environment's leak policy; the
// answer says what it did, or why it did nothing. The value is cleared once it was sent.

import { ApiError, call, paths } from "./api.js";
import { h } from "./dom.js";

export async function leaksView(ctx) {
  ctx.title("Leaks");
  return h(
    "div",
    { class: "view" },
    h("h1", { tabindex: "-1", text: "Leaks" }),
    h(
      "p",
      { class: "muted" },
      "GitHub reports the secrets it finds to ",
      h("code", { text: "POST /leaks/github" }),
      " by itself; report here what another scanner or a person found.",
    ),
    reportForm(ctx),
  );
}

function reportForm(ctx) {
  const token = h("textarea", {
    id: "leaked-token",
    name: "token",
    class: "secret",
    rows: "3",
    required: true,
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": "leaked-token-hint leaked-token-error",
  });
  const url = h("input", { id: "leak-url", name: "url", type: "url", autocomplete: "off", "aria-describedby": "leak-url-hint" });
  const error = h("p", { id: "leaked-token-error", class: "field-error", role: "alert" });
  const result = h("div", { class: "leak-result", role: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary", text: "Report leak" });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "report-title",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        result.replaceChildren();
        const value = token.value.trim();
        if (!value) {
          error.textContent = "Paste the leaked secret or token.";
          token.setAttribute("aria-invalid", "true");
          token.focus();
          return;
        }
        token.removeAttribute("aria-invalid");
        const body = { token: value };
        if (url.value.trim()) body.url = url.value.trim();
        button.disabled = true;
        try {
          const answer = await call("POST", paths.leaks, { body });
          token.value = "";
          url.value = "";
          result.replaceChildren(outcomeNotice(answer));
          ctx.announce(answer.message);
        } catch (failure) {
          if (failure instanceof ApiError) error.textContent = failure.message;
          else throw failure;
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h2", { id: "report-title", text: "Report a leaked secret" }),
    h(
      "div",
      { class: "field" },
      h("label", { for: "leaked-token", text: "Leaked secret or token" }),
      token,
      h("p", {
        id: "leaked-token-hint",
        class: "hint",
        text: "A client secret, a refresh token, or an access token (a JWT). It is not stored: only what it stands for is recorded.",
      }),
      error,
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "leak-url", text: "Where it was found (optional)" }),
      url,
      h("p", { id: "leak-url-hint", class: "hint", text: "A link to the file, message or page; it is kept in the audit trail." }),
    ),
    h("div", { class: "actions start" }, button),
    result,
  );
  return form;
}

const TONES = { revoked: "ok", notified: "warning", already_reported: "ok" };

function outcomeNotice(answer) {
  return h(
    "div",
    { class: `notice ${TONES[answer.outcome] ?? ""}`.trim() },
    h("p", {}, h("strong", { text: answer.message })),
  );
}
