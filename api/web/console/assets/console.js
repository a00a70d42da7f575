// <m2m-console>: the vendor's console. Sign-in, then M2M settings, Accounts, Roles, Events, Jobs
// and Leaks behind hash routes (#/settings, #/accounts, #/accounts/<tenantId>, #/roles, #/events,
// #/jobs, #/leaks).
//
// Theming: the --m2m-* custom properties (see console.css); `theme="light"` or `theme="dark"`
// on the element forces a scheme, otherwise it follows the system's.

import { ApiError, SessionExpired, sessionEvents, signIn, signOut, signedIn } from "./api.js";
import { accountsView, tenantView } from "./accounts.js";
import { h } from "./dom.js";
import { eventsView } from "./events.js";
import { jobsView } from "./jobs.js";
import { leaksView } from "./leaks.js";
import { rolesView } from "./roles.js";
import { settingsView } from "./settings.js";

const SECTIONS = [
  { path: "settings", label: "M2M settings" },
  { path: "accounts", label: "Accounts" },
  { path: "roles", label: "Roles" },
  { path: "events", label: "Events" },
  { path: "jobs", label: "Jobs" },
  { path: "leaks", label: "Leaks" },
];

/** The route in the address: its path segments and query. */
function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const segments = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { segments, query: new URLSearchParams(query) };
}

function viewFor({ segments }) {
  const [section, id] = segments;
  if (section === "accounts" && id !== undefined) return { section, show: (ctx) => tenantView(ctx, id) };
  if (section === "accounts") return { section, show: accountsView };
  if (section === "roles") return { section, show: rolesView };
  if (section === "events") return { section, show: eventsView };
  if (section === "jobs") return { section, show: jobsView };
  if (section === "leaks") return { section, show: leaksView };
  return { section: "settings", show: settingsView };
}

class M2MConsole extends HTMLElement {
  #root;
  #main;
  #live;
  #rendering = 0;

  connectedCallback() {
    if (this.#root) return;
    this.#root = this.attachShadow({ mode: "open" });
    this.#root.append(h("link", { rel: "stylesheet", href: "/console/assets/console.css" }));
    window.addEventListener("hashchange", () => this.#show({ focus: true }));
    sessionEvents.addEventListener("expired", () =>
      this.#signInPage("Your session has expired. Sign in again."),
    );
    // An action cut short by the end of the session has nothing left to do: sign-in shows.
    window.addEventListener("unhandledrejection", (event) => {
      if (event.reason instanceof SessionExpired) event.preventDefault();
    });
    this.#show({ focus: false });
  }

  /** Say something to screen readers without moving focus. */
  announce(text) {
    if (!this.#live?.isConnected) return;
    this.#live.textContent = "";
    // A fresh text node is announced even when it repeats the last message.
    requestAnimationFrame(() => {
      this.#live.textContent = text;
    });
  }

  #show({ focus }) {
    if (!signedIn()) {
      this.#signInPage(null);
      return;
    }
    if (!this.#main) this.#shell();
    this.#render({ focus: focus ? "h1" : null });
  }

  #shell() {
    const nav = h(
      "nav",
      { "aria-label": "Console" },
      h(
        "ul",
        {},
        SECTIONS.map((s) => h("li", {}, h("a", { href: `#/${s.path}`, "data-section": s.path, text: s.label }))),
      ),
    );
    const header = h(
      "header",
      { class: "bar" },
      h("a", { class: "brand", href: "#/settings" }, "M2M tokens ", h("span", { text: "Console" })),
      nav,
      h("button", {
        type: "button",
        class: "secondary small",
        text: "Sign out",
        onclick: () => {
          signOut();
          this.#signInPage("You are signed out.");
        },
      }),
    );
    this.#main = h("main", { id: "main", tabindex: "-1" });
    this.#live = h("div", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    this.#replace(h("a", { class: "skip", href: "#main", text: "Skip to content", onclick: (e) => {
      e.preventDefault();
      this.#main.focus();
    } }), header, this.#main, this.#live);
  }

  #replace(...nodes) {
    // Keep the stylesheet; replace the rest.
    const [style] = this.#root.querySelectorAll("link");
    this.#root.replaceChildren(style, ...nodes);
  }

  /** Render the current route; `focus` names what gets focus once it shows (null: nothing). */
  async #render({ focus = null } = {}) {
    const turn = ++this.#rendering;
    const route = currentRoute();
    const { section, show } = viewFor(route);
    for (const link of this.#root.querySelectorAll("nav a")) {
      if (link.dataset.section === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const ctx = {
      root: this.#root,
      query: route.query,
      announce: (text) => this.announce(text),
      go: (hash) => {
        if (location.hash === hash) this.#render({ focus: "h1" });
        else location.hash = hash;
      },
      reload: (focusSelector = null) => this.#render({ focus: focusSelector }),
      title: (text) => {
        document.title = `${text} · M2M tokens console`;
      },
    };
    if (this.#main.childElementCount === 0 || focus === "h1") {
      this.#main.replaceChildren(h("p", { class: "loading", text: "Loading…" }));
    }
    let view;
    try {
      view = await show(ctx);
    } catch (error) {
      if (error instanceof SessionExpired) return; // sign-in is showing already
      if (turn !== this.#rendering) return;
      view = this.#failure(error);
    }
    if (turn !== this.#rendering || !this.#main.isConnected) return;
    this.#main.replaceChildren(view);
    if (focus) (this.#main.querySelector(focus) ?? this.#main.querySelector("h1"))?.focus();
  }

  #failure(error) {
    const message = error instanceof ApiError ? error.message : "Something went wrong while loading this page.";
    return h(
      "div",
      { class: "notice error", role: "alert" },
      h("h1", { tabindex: "-1", text: "This page could not be loaded" }),
      h("p", { text: message }),
      h("button", { type: "button", class: "secondary", text: "Try again", onclick: () => this.#render({ focus: "h1" }) }),
    );
  }

  #signInPage(message) {
    this.#rendering += 1; // whatever was loading is no longer wanted
    this.#main = null;
    document.title = "Sign in · M2M tokens console";
    const error = h("p", { class: "field-error", role: "alert" });
    const clientId = h("input", { id: "client-id", name: "clientId", autocomplete: "username", required: true, spellcheck: "false" });
    const secret = h("input", { id: "secret", name: "secret", type: "password", autocomplete: "current-password", required: true });
    const button = h("button", { type: "submit", class: "primary", text: "Sign in" });
    const form = h(
      "form",
      {
        class: "card signin",
        "aria-labelledby": "signin-title",
        novalidate: true,
        onsubmit: async (event) => {
          event.preventDefault();
          error.textContent = "";
          if (!clientId.value.trim() || !secret.value) {
            error.textContent = "Enter the client ID and the secret.";
            (clientId.value.trim() ? secret : clientId).focus();
            return;
          }
          button.disabled = true;
          try {
            await signIn(clientId.value.trim(), secret.value);
          } catch (failure) {
            button.disabled = false;
            error.textContent = failure instanceof ApiError ? failure.message : "Sign-in failed. Try again.";
            secret.select();
            secret.focus();
            return;
          }
          this.#shell();
          this.#render({ focus: "h1" });
        },
      },
      h("h1", { id: "signin-title", text: "Sign in to the console" }),
      message ? h("p", { class: "notice", role: "status", text: message }) : null,
      h(
        "p",
        { class: "muted" },
        "Use this environment's vendor credentials: M2M_VENDOR_CLIENT_ID and M2M_VENDOR_SECRET, or what ",
        h("code", { text: "m2m dev" }),
        " printed.",
      ),
      h("div", { class: "field" }, h("label", { for: "client-id", text: "Client ID" }), clientId),
      h("div", { class: "field" }, h("label", { for: "secret", text: "Secret" }), secret),
      error,
      h("div", { class: "actions" }, button),
    );
    this.#replace(h("main", { class: "center" }, form));
    clientId.focus();
  }
}

customElements.define("m2m-console", M2MConsole);
