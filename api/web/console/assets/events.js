// Events: the endpoints outbound events are sent to. Add one (its signing secret is shown once),
// send it a test event, rotate its secret, turn it on or off, read its delivery log, delete it.

import { ApiError, call, paths } from "./api.js";
import { confirmDialog, openDialog } from "./dialogs.js";
import { h, table, uid, when } from "./dom.js";

export async function eventsView(ctx) {
  ctx.title("Events");
  const [endpoints, { eventTypes }] = await Promise.all([call("GET", paths.eventEndpoints), call("GET", paths.eventTypes)]);
  const add = h("button", { type: "button", class: "primary", id: "add-endpoint", text: "Add endpoint", onclick: () => addEndpoint(ctx, eventTypes) });
  return h(
    "div",
    { class: "view" },
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1", text: "Events" }), add),
    h(
      "p",
      { class: "muted" },
      "The service posts signed events (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) to these endpoints, at least once, retrying for up to a day.",
    ),
    table(
      "Event endpoints",
      [
        { label: "URL", cell: (endpoint) => h("span", {}, h("code", { text: endpoint.url }), endpoint.description ? h("span", { class: "muted", text: ` ${endpoint.description}` }) : null) },
        { label: "Events", cell: (endpoint) => h("ul", { class: "tags" }, endpoint.eventTypes.map((type) => h("li", {}, h("code", { text: type })))) },
        {
          label: "Status",
          cell: (endpoint) =>
            endpoint.enabled
              ? h("span", { class: "badge ok", text: "On" })
              : h("span", {}, h("span", { class: "badge overdue", text: "Off" }), endpoint.disabledReason ? h("span", { class: "muted", text: ` ${endpoint.disabledReason}` }) : null),
        },
        {
          label: "Actions",
          class: "actions-cell",
          cell: (endpoint) =>
            h(
              "div",
              { class: "row-actions" },
              action(`Send test event to ${endpoint.url}`, "Send test", () => sendTest(ctx, endpoint)),
              action(`Deliveries to ${endpoint.url}`, "Deliveries", () => showDeliveries(ctx, endpoint)),
              action(`${endpoint.enabled ? "Turn off" : "Turn on"} ${endpoint.url}`, endpoint.enabled ? "Turn off" : "Turn on", () => toggle(ctx, endpoint)),
              action(`Rotate secret of ${endpoint.url}`, "Rotate secret", () => rotateSecret(ctx, endpoint)),
              action(`Delete ${endpoint.url}`, "Delete", () => deleteEndpoint(ctx, endpoint), "danger small"),
            ),
        },
      ],
      endpoints,
      { empty: "No endpoints yet: add one to receive events." },
    ),
  );
}

function action(label, text, onclick, cls = "secondary small") {
  return h("button", { type: "button", class: cls, text, "aria-label": label, onclick });
}

async function attempt(ctx, work, done) {
  try {
    await work();
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(failure.message);
    return;
  }
  ctx.announce(done);
  ctx.reload("#add-endpoint");
}

function sendTest(ctx, endpoint) {
  return attempt(ctx, () => call("POST", paths.eventEndpointTest(endpoint.id)), `A test event is on its way to ${endpoint.url}.`);
}

function toggle(ctx, endpoint) {
  const enabled = !endpoint.enabled;
  return attempt(
    ctx,
    () => call("PATCH", paths.eventEndpoint(endpoint.id), { body: { enabled } }),
    `${endpoint.url} is turned ${enabled ? "on" : "off"}.`,
  );
}

async function deleteEndpoint(ctx, endpoint) {
  const confirmed = await confirmDialog(ctx.root, {
    title: "Delete this endpoint?",
    paragraphs: [`Events will no longer be sent to ${endpoint.url}, and its delivery log is deleted.`],
    confirm: "Delete endpoint",
  });
  if (confirmed) await attempt(ctx, () => call("DELETE", paths.eventEndpoint(endpoint.id)), `${endpoint.url} is deleted.`);
}

async function rotateSecret(ctx, endpoint) {
  const confirmed = await confirmDialog(ctx.root, {
    title: "Rotate the signing secret?",
    paragraphs: [`From now on every event to ${endpoint.url} is signed with a new secret only: give it to the receiver at once.`],
    confirm: "Rotate secret",
  });
  if (!confirmed) return;
  let answer;
  try {
    answer = await call("POST", paths.eventEndpointSecret(endpoint.id));
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(failure.message);
    return;
  }
  await openDialog(ctx.root, { title: "The new signing secret", build: (dialog, close) => secretPanel(answer.secret, () => close(true)) });
  ctx.reload("#add-endpoint");
}

function addEndpoint(ctx, eventTypes) {
  let created = null;
  return openDialog(ctx.root, {
    title: "Add an event endpoint",
    build: (dialog, close) => {
      const error = h("p", { class: "field-error", role: "alert" });
      const url = h("input", { id: "endpoint-url", type: "url", required: true, maxlength: 2048, autocomplete: "off", spellcheck: "false", placeholder: "https://example.com/webhooks/m2m" });
      const description = h("input", { id: "endpoint-description", maxlength: 1024, autocomplete: "off" });
      const submit = h("button", { type: "submit", class: "primary", text: "Add endpoint" });
      const content = h("div", {});
      const form = h(
        "form",
        {
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            error.textContent = "";
            const chosen = [...form.querySelectorAll("input[name=event-type]:checked")].map((box) => box.value);
            if (!url.value.trim()) {
              error.textContent = "Enter the endpoint's URL.";
              url.focus();
              return;
            }
            if (!chosen.length) {
              error.textContent = "Choose at least one event type.";
              form.querySelector("input[name=event-type]")?.focus();
              return;
            }
            submit.disabled = true;
            try {
              const body = { url: url.value.trim(), eventTypes: chosen };
              if (description.value.trim()) body.description = description.value.trim();
              created = await call("POST", paths.eventEndpoints, { body });
            } catch (failure) {
              submit.disabled = false;
              if (!(failure instanceof ApiError)) throw failure;
              error.textContent = `The endpoint was not added: ${failure.message}`;
              return;
            }
            content.replaceChildren(secretPanel(created.secret, () => close(true)));
            content.querySelector("textarea")?.focus();
          },
        },
        h("div", { class: "field" }, h("label", { for: "endpoint-url", text: "URL" }), url),
        h("div", { class: "field" }, h("label", { for: "endpoint-description", text: "Description (optional)" }), description),
        h(
          "fieldset",
          {},
          h("legend", { text: "Event types" }),
          h(
            "div",
            { class: "choices" },
            eventTypes.map((type) => h("label", { class: "choice" }, h("input", { type: "checkbox", name: "event-type", value: type, checked: type !== "test" }), h("code", { text: type }))),
          ),
        ),
        error,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => close(false) }), submit),
      );
      content.append(form);
      return content;
    },
  }).then(() => {
    if (!created) return;
    ctx.announce(`Endpoint ${created.url} added.`);
    ctx.reload("#add-endpoint");
  });
}

/** The signing secret, shown this once. */
function secretPanel(secret, finish) {
  const id = uid("secret");
  const status = h("p", { class: "saved", role: "status" });
  const box = h("textarea", { id, readonly: true, rows: 2, spellcheck: "false", class: "secret", value: secret });
  return h(
    "div",
    { class: "secret-panel" },
    h("p", { class: "notice warning" }, h("strong", { text: "Copy it now. " }), "The receiver checks each event's signature with this secret; the service never shows it again."),
    h(
      "div",
      { class: "field" },
      h("label", { for: id, text: "Signing secret" }),
      box,
      h("button", {
        type: "button",
        class: "secondary small",
        text: "Copy signing secret",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(box.value);
            status.textContent = "Signing secret copied.";
          } catch {
            box.focus();
            box.select();
            status.textContent = "Select the signing secret and copy it.";
          }
        },
      }),
    ),
    status,
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", text: "Done", onclick: finish })),
  );
}

const STATUSES = { pending: "Pending", delivered: "Delivered", failed: "Failed" };

async function showDeliveries(ctx, endpoint) {
  let deliveries;
  try {
    deliveries = await call("GET", `${paths.eventEndpointDeliveries(endpoint.id)}?limit=50`);
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(failure.message);
    return;
  }
  await openDialog(ctx.root, {
    title: `Deliveries to ${endpoint.url}`,
    build: (dialog, close) =>
      h(
        "div",
        { class: "deliveries" },
        table(
          "Deliveries, newest first",
          [
            { label: "Event", cell: (delivery) => h("code", { text: delivery.eventType }) },
            { label: "Created", cell: (delivery) => when(delivery.createdAt) },
            { label: "Status", cell: (delivery) => STATUSES[delivery.status] ?? delivery.status },
            { label: "Attempts", cell: (delivery) => String(delivery.attempts) },
            {
              label: "Last answer",
              cell: (delivery) =>
                delivery.attempts === 0
                  ? h("span", { class: "muted", text: "Not sent yet" })
                  : `${delivery.lastStatusCode ?? delivery.lastError ?? "—"} in ${delivery.lastLatencyMs} ms`,
            },
            {
              label: "Actions",
              class: "actions-cell",
              cell: (delivery) =>
                action(`Redeliver ${delivery.eventType} ${delivery.eventId}`, "Redeliver", async () => {
                  await call("POST", paths.eventEndpointRedeliver(endpoint.id, delivery.id));
                  ctx.announce(`${delivery.eventType} will be sent again.`);
                  close(true);
                }),
            },
          ],
          deliveries,
          { empty: "Nothing was sent to it yet." },
        ),
        h("div", { class: "actions" }, h("button", { type: "button", class: "primary", text: "Close", onclick: () => close(false) })),
      ),
  });
}
