// M2M settings: the switch that turns every token on or off, the kind new tokens are made as,
// and the lifetimes of exchanged JWTs and refresh tokens (within the limits the API enforces).

import { ApiError, call, paths } from "./api.js";
import { confirmDialog } from "./dialogs.js";
import { h, seconds, uid } from "./dom.js";

export const KIND_LABELS = {
  ClientCredentials: "Client credentials",
  AccessToken: "Access tokens",
};

const SWITCH_STATE = {
  true: "On: tokens are created, exchanged and validated.",
  false: "Off: every token fails validation, and no token can be created.",
};

export async function settingsView(ctx) {
  ctx.title("M2M settings");
  const [config, limits] = await Promise.all([call("GET", paths.configuration), call("GET", paths.limits)]);
  return h(
    "div",
    { class: "view" },
    h("h1", { tabindex: "-1", text: "M2M settings" }),
    m2mSwitch(ctx, config.apiTokensEnabled),
    tokenSettings(ctx, config, limits),
  );
}

function m2mSwitch(ctx, enabled) {
  const stateId = uid("switch-state");
  const state = h("p", { id: stateId, class: "switch-state" });
  const error = h("p", { class: "field-error", role: "alert" });
  const control = h(
    "button",
    { type: "button", role: "switch", class: "switch", "aria-describedby": stateId },
    h("span", { class: "track", "aria-hidden": "true" }, h("span", { class: "thumb" })),
  );
  control.setAttribute("aria-labelledby", "switch-title");
  const show = (on) => {
    control.setAttribute("aria-checked", String(on));
    state.textContent = SWITCH_STATE[on];
    state.classList.toggle("off", !on);
  };
  show(enabled);
  control.addEventListener("click", async () => {
    const turningOn = control.getAttribute("aria-checked") !== "true";
    error.textContent = "";
    const confirmed = await confirmDialog(ctx.root, turningOn ? ON : OFF);
    if (!confirmed) return;
    control.disabled = true;
    try {
      const config = await call("POST", paths.configuration, { body: { apiTokensEnabled: turningOn } });
      show(config.apiTokensEnabled);
      ctx.announce(config.apiTokensEnabled ? "API tokens are on." : "API tokens are off.");
    } catch (failure) {
      if (failure instanceof ApiError) error.textContent = failure.message;
      else throw failure;
    } finally {
      control.disabled = false;
      control.focus();
    }
  });
  return h(
    "section",
    { class: "card", "aria-labelledby": "switch-title" },
    h("h2", { id: "switch-title", text: "API tokens" }),
    h("div", { class: "switch-row" }, control, state),
    error,
  );
}

const OFF = {
  title: "Turn off API tokens?",
  paragraphs: [
    "Every existing token stops working at once: access tokens, client credentials and the JWTs " +
      "already exchanged for them all fail validation, and no token can be created.",
    "Turning API tokens on again restores every token that has not expired or been deleted meanwhile.",
  ],
  confirm: "Turn off API tokens",
};

const ON = {
  title: "Turn on API tokens?",
  paragraphs: [
    "Every token that was valid when API tokens were turned off, and has not expired or been " +
      "deleted since, works again at once.",
  ],
  confirm: "Turn on API tokens",
  danger: false,
};

function tokenSettings(ctx, config, limits) {
  const status = h("p", { class: "saved", role: "status" });
  const refused = h("p", { class: "field-error", role: "alert" });
  const kinds = Object.entries(KIND_LABELS).map(([value, label]) =>
    h(
      "label",
      { class: "choice" },
      h("input", { type: "radio", name: "kind", value, checked: config.machineToMachineAuthStrategy === value }),
      h("span", {}, h("strong", { text: label }), h("span", { class: "muted", text: KIND_HINTS[value] })),
    ),
  );
  const jwt = secondsField({
    id: "jwt-expiration",
    label: "JWT expiration (seconds)",
    value: config.defaultTokenExpiration,
    range: limits.defaultTokenExpiration,
    hint: "How long each JWT that client credentials are exchanged for stays valid",
  });
  const refresh = secondsField({
    id: "refresh-expiration",
    label: "Refresh token expiration (seconds)",
    value: config.defaultRefreshTokenExpiration,
    range: limits.defaultRefreshTokenExpiration,
    hint: "How long a refresh token can be used",
  });
  const save = h("button", { type: "submit", class: "primary", text: "Save settings" });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "token-settings-title",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        status.textContent = "";
        refused.textContent = "";
        const invalid = [jwt, refresh].filter((field) => !field.check());
        if (invalid.length > 0) {
          invalid[0].input.focus();
          return;
        }
        const body = {
          machineToMachineAuthStrategy: form.elements.kind.value,
          defaultTokenExpiration: jwt.number(),
          defaultRefreshTokenExpiration: refresh.number(),
        };
        save.disabled = true;
        try {
          await call("POST", paths.configuration, { body });
          status.textContent = `Saved. New tokens are ${KIND_LABELS[body.machineToMachineAuthStrategy].toLowerCase()}.`;
        } catch (failure) {
          if (!(failure instanceof ApiError)) throw failure;
          refused.textContent = `Not saved: ${failure.message}`;
        } finally {
          save.disabled = false;
        }
      },
    },
    h("h2", { id: "token-settings-title", text: "Token settings" }),
    h(
      "fieldset",
      {},
      h("legend", { text: "Token kind" }),
      h("p", { class: "muted", text: "New tokens are created as this kind. Existing tokens of the other kind keep working." }),
      kinds,
    ),
    jwt.element,
    refresh.element,
    refused,
    h("div", { class: "actions start" }, save, status),
  );
  return form;
}

const KIND_HINTS = {
  ClientCredentials: "A client ID and secret, exchanged for short-lived JWTs and refresh tokens.",
  AccessToken: "One long-lived signed token, sent as X-API-KEY.",
};

/** A number of seconds with its bounds shown, checked before sending, with its own error. */
function secondsField({ id, label, value, range, hint }) {
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const limitsText = `${range.min.toLocaleString("en")} to ${range.max.toLocaleString("en")} seconds (${seconds(range.max)})`;
  const input = h("input", {
    id,
    type: "number",
    inputmode: "numeric",
    min: range.min,
    max: range.max,
    step: 1,
    required: true,
    value: String(value),
    "aria-describedby": `${hintId} ${errorId}`,
  });
  const equals = h("span", { class: "equals" });
  const error = h("p", { id: errorId, class: "field-error" });
  const number = () => Number(input.value);
  const showEquals = () => {
    const n = number();
    equals.textContent = input.value !== "" && Number.isInteger(n) && n > 0 ? `= ${seconds(n)}` : "";
  };
  const fail = (message) => {
    input.setAttribute("aria-invalid", "true");
    error.textContent = message;
  };
  const check = () => {
    const n = number();
    if (input.value.trim() === "" || !Number.isInteger(n) || n < range.min || n > range.max) {
      fail(`${label.replace(/ \(seconds\)$/, "")} must be a whole number from ${limitsText}.`);
      return false;
    }
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    return true;
  };
  input.addEventListener("input", () => {
    showEquals();
    if (input.hasAttribute("aria-invalid")) check();
  });
  showEquals();
  const element = h(
    "div",
    { class: "field" },
    h("label", { for: id, text: label }),
    h("div", { class: "with-equals" }, input, equals),
    h("p", { id: hintId, class: "hint", text: `${hint}: ${limitsText}.` }),
    error,
  );
  return { element, input, check, number, fail };
}
