// Activity: an account's audit trail (GET /audits/v1?tenantId=…), newest first, a page at a time:
// who acted (the vendor, a user, a job, a leak report, the service), what, on which object, when,
// from which address, and the request id to find the request in the logs.

import { call, paths } from "./api.js";
import { h, table, when } from "./dom.js";

const PAGE = 20;

const ACTORS = { vendor: "Vendor", job: "Job", leak_report: "Leak report", system: "The service" };
const TARGETS = {
  access_token: "Access token",
  client_credential: "Client credentials",
  refresh_token_family: "Refresh tokens",
  user: "User",
  tenant: "Account",
  role: "Role",
  permission: "Permission",
  environment: "M2M settings",
};

/** The section, its first page loaded; "Show older activity" appends the next. */
export async function activitySection(tenantId, person) {
  const first = await call("GET", paths.audits({ tenantId, limit: PAGE }));
  const who = (event) => {
    if (event.actor.type === "user") return person(event.actor.id) ?? h("code", { text: event.actor.id ?? "" });
    const label = ACTORS[event.actor.type] ?? event.actor.type;
    return event.actor.id && event.actor.type !== "vendor"
      ? h("span", { class: "person" }, h("span", { text: label }), h("code", { class: "muted", text: event.actor.id }))
      : h("span", { text: label });
  };
  const what = (event) => h("code", { text: event.action });
  const target = (event) =>
    h("span", { class: "person" }, h("span", { text: TARGETS[event.target.type] ?? event.target.type }), h("code", { class: "muted", text: event.target.id }));
  const from = (event) => (event.actor.address ? h("code", { text: event.actor.address }) : h("span", { class: "muted", text: "—" }));
  const request = (event) => (event.requestId ? h("code", { class: "request-id", text: event.requestId }) : h("span", { class: "muted", text: "—" }));
  const columns = [
    { label: "When", cell: (event) => when(event.at) },
    { label: "Who", class: "nowrap", cell: who },
    { label: "Action", class: "nowrap", cell: what },
    { label: "Object", cell: target },
    { label: "From", class: "nowrap", cell: from },
    { label: "Request ID", cell: request },
  ];
  const events = [...first.items];
  let cursor = first.nextCursor;
  const holder = h("div", {}, table("Account activity", columns, events, { empty: "Nothing has happened in this account yet." }));
  const older = h("button", {
    type: "button",
    class: "secondary",
    id: "older-activity",
    text: "Show older activity",
    hidden: cursor === null,
    onclick: async () => {
      older.disabled = true;
      const next = await call("GET", paths.audits({ tenantId, limit: PAGE, cursor }));
      events.push(...next.items);
      cursor = next.nextCursor;
      holder.replaceChildren(table("Account activity", columns, events));
      older.hidden = cursor === null;
      older.disabled = false;
      older.focus();
    },
  });
  return h(
    "section",
    { "aria-labelledby": "activity-title" },
    h("h2", { id: "activity-title", tabindex: "-1", text: "Activity" }),
    holder,
    older,
  );
}
