// <m2m-api-tokens>: the end users' API-token pages as one custom element (shadow DOM, no
// framework, no build step), served by the token service at /m2m-api-tokens.js.
//
//   <script type="module" src="https://tokens.example.com/m2m-api-tokens.js"></script>
//   <m2m-api-tokens></m2m-api-tokens>
//   element.getSessionToken = async () => myIdp.currentJwt();   // called before each request
//   // or: element.sessionToken = jwt;
//
// A renewed token (a new sessionToken) is used from the next request on; `reload()` starts over.
// Attributes: `api-base` (the service's URL; by default where this file was loaded from) and
// `theme` ("light" or "dark"; by default the user's prefers-color-scheme). Theming: the
// --m2m-* custom properties listed in STYLE below, and ::part(identity). Events:
// `m2m-session-expired` when the service refuses the session (401).
//
// Every string that comes from data is set as text (textContent, value, append of a string),
// never parsed as HTML.

const EXPIRATIONS = [
  { label: "Never", minutes: null },
  { label: "After 1 day", minutes: 1440 },
  { label: "After 7 days", minutes: 7 * 1440 },
  { label: "After 30 days", minutes: 30 * 1440 },
  { label: "After 90 days", minutes: 90 * 1440 },
  { label: "After 365 days", minutes: 365 * 1440 },
];
const DEFAULT_EXPIRATION = "After 30 days";

/** "7 days", "12 hours", "90 minutes": a policy's number of minutes for a person. */
function duration(minutes) {
  if (minutes % 1440 === 0) return `${minutes / 1440} day${minutes === 1440 ? "" : "s"}`;
  if (minutes % 60 === 0) return `${minutes / 60} hour${minutes === 60 ? "" : "s"}`;
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
}

/**
 * The expiration choices the account's token policy allows (the service refuses any other):
 * the presets within its longest expiration, "Never" only when tokens need not expire, and the
 * longest itself when no preset is it.
 */
export function allowedExpirations(policy) {
  const longest = policy?.maxExpiresInMinutes ?? null;
  const mustExpire = longest !== null || Boolean(policy?.requireExpiration);
  const choices = EXPIRATIONS.filter((choice) =>
    choice.minutes === null ? !mustExpire : longest === null || choice.minutes <= longest,
  );
  if (longest !== null && !choices.some((choice) => choice.minutes === longest)) {
    choices.push({ label: `After ${duration(longest)}`, minutes: longest });
  }
  return choices;
}

const TABS = [
  {
    key: "tenant",
    label: "API Tokens",
    resource: "tenantApiTokens",
    scope: "tenants",
    noun: "API token",
    lead: "Tokens of the whole account. Each acts with the roles you give it.",
    empty: "This account has no API tokens yet.",
  },
  {
    key: "user",
    label: "Personal Tokens",
    resource: "userApiTokens",
    scope: "users",
    noun: "personal token",
    lead: "Your own tokens. Each acts as you, with your roles.",
    empty: "You have no personal tokens yet.",
  },
];

// machineToMachineAuthStrategy -> the kind of token it creates.
// How long the replaced secret or access token keeps working (0 to 7 days, README "Rotation").
const OVERLAPS = [
  { label: "No overlap: the old one stops now", minutes: 0 },
  { label: "1 hour", minutes: 60 },
  { label: "1 day", minutes: 1440 },
  { label: "7 days", minutes: 7 * 1440 },
];
// The overlap a rotation dialog starts on: the largest allowed choice up to this one.
const PREFERRED_OVERLAP_MINUTES = 1440;

/**
 * The overlap choices the account's token policy allows (the service refuses any other): the
 * presets within its longest rotation overlap, and the longest itself when no preset is it.
 */
export function allowedOverlaps(policy) {
  const longest = policy?.maxRotationOverlapMinutes ?? null;
  const choices = OVERLAPS.filter((choice) => longest === null || choice.minutes <= longest);
  if (longest !== null && !choices.some((choice) => choice.minutes === longest)) {
    choices.push({ label: duration(longest), minutes: longest });
    choices.sort((first, second) => first.minutes - second.minutes);
  }
  return choices;
}

/** The choice a rotation dialog starts on: the largest of `choices` up to 1 day. */
export function defaultOverlap(choices) {
  return choices.filter((choice) => choice.minutes <= PREFERRED_OVERLAP_MINUTES).at(-1)?.minutes ?? 0;
}

function previousSecretWorks(token, now) {
  return Boolean(token.previousSecretExpires) && Date.parse(token.previousSecretExpires) > now;
}

const KINDS = {
  ClientCredentials: { label: "Client credentials", segment: "api-tokens", id: "clientId" },
  AccessToken: { label: "Access token", segment: "access-tokens", id: "id" },
};

const MESSAGES = {
  session: {
    title: "Your session has expired",
    body: "Sign in again to manage your API tokens.",
  },
  permission: {
    title: "You no longer have access to API tokens",
    body: "Your permissions in this account have changed. Ask an administrator of your account if you need access.",
  },
  // The service answered that it cannot serve now (503, 429, another 5xx).
  unavailable: {
    title: "The token service is unavailable",
    body: "It is busy or down right now. Try again in a moment.",
    retry: true,
  },
  // No answer reached the page: offline, the service down, or (the browser does not say which)
  // the service's CORS refused this page's origin.
  unreachable: {
    title: "The token service could not be reached",
    body:
      "No answer came back to this page. If this page embeds the token service, this page's address " +
      "must be allowed by the service (M2M_EMBED_ORIGINS). Otherwise check your connection and try again.",
    retry: true,
  },
  "signed-out": {
    title: "You are not signed in",
    body: "Open this page from your application to manage your API tokens.",
  },
  disabled: {
    title: "API tokens are disabled",
    body: "API tokens are turned off for this application. Existing tokens do not work until they are turned on again.",
  },
  "no-access": {
    title: "You do not have access to API tokens",
    body: "Ask an administrator of your account if you need access.",
  },
};

// --- what the service answers -------------------------------------------------------------------

class PortalError extends Error {
  /** reason: session | permission | disabled | unavailable | unreachable | signed-out | invalid | gone */
  constructor(reason, detail = "") {
    super(detail || reason);
    this.reason = reason;
    this.detail = detail;
  }
}

async function errorOf(response) {
  let message = "";
  try {
    const body = await response.json();
    message = Array.isArray(body.errors) ? String(body.errors[0] ?? "") : "";
  } catch {
    // not JSON: the status says enough
  }
  if (response.status === 401) return new PortalError("session", message);
  if (response.status === 403) {
    return new PortalError(message === "Api tokens are disabled" ? "disabled" : "permission", message);
  }
  if (response.status === 404) return new PortalError("gone", message);
  if (response.status === 429 || response.status >= 500) {
    return new PortalError("unavailable", message);
  }
  return new PortalError("invalid", message);
}

// --- time -----------------------------------------------------------------------------------

const plural = (count, unit) => `${count} ${unit}${count === 1 ? "" : "s"}`;

/** "Never", "7 days", "23 hours", "5 minutes" or "Expired": the time left, rounded. */
export function expiresIn(expires, now) {
  if (!expires) return "Never";
  const left = Date.parse(expires) - now;
  if (!(left > 0)) return "Expired";
  const minutes = left / 60000;
  const hours = minutes / 60;
  if (hours >= 23.5) return plural(Math.round(hours / 24), "day");
  if (minutes >= 59.5) return plural(Math.round(hours), "hour");
  return plural(Math.max(1, Math.round(minutes)), "minute");
}

/** "Never", "Just now", "5 minutes ago", "3 hours ago" or "2 days ago": the time since a use. */
export function lastUsed(at, now) {
  if (!at) return "Never";
  const since = now - Date.parse(at);
  const minutes = since / 60000;
  const hours = minutes / 60;
  if (!(minutes >= 1)) return "Just now";
  if (hours >= 23.5) return `${plural(Math.round(hours / 24), "day")} ago`;
  if (minutes >= 59.5) return `${plural(Math.round(hours), "hour")} ago`;
  return `${plural(Math.round(minutes), "minute")} ago`;
}

const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeStyle: "short" });

// --- building the DOM: strings become text nodes, never markup ---------------------------------

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden"]);

function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

// --- styles: one constructed sheet (allowed by a CSP without 'unsafe-inline') ---------------

const LIGHT = `
  --_bg: var(--m2m-color-background, #ffffff);
  --_surface: var(--m2m-color-surface, #f5f6f8);
  --_text: var(--m2m-color-text, #1b1f24);
  --_muted: var(--m2m-color-muted, #59616e);
  --_border: var(--m2m-color-border, #c9ced6);
  --_primary: var(--m2m-color-primary, #1d57c9);
  --_on-primary: var(--m2m-color-on-primary, #ffffff);
  --_danger: var(--m2m-color-danger, #b3261e);
  --_on-danger: var(--m2m-color-on-danger, #ffffff);
  --_warning-bg: var(--m2m-color-warning-background, #fff4d6);
  --_warning-text: var(--m2m-color-warning-text, #5c4300);
  --_focus: var(--m2m-color-focus, #1d57c9);
  --_backdrop: rgb(15 20 30 / 0.45);
  color-scheme: light;
`;
const DARK = `
  --_bg: var(--m2m-color-background, #15181d);
  --_surface: var(--m2m-color-surface, #1e232a);
  --_text: var(--m2m-color-text, #e9ecf1);
  --_muted: var(--m2m-color-muted, #a9b1be);
  --_border: var(--m2m-color-border, #434b57);
  --_primary: var(--m2m-color-primary, #8ab4ff);
  --_on-primary: var(--m2m-color-on-primary, #0c1526);
  --_danger: var(--m2m-color-danger, #ffb4ab);
  --_on-danger: var(--m2m-color-on-danger, #3d0a06);
  --_warning-bg: var(--m2m-color-warning-background, #3a2f0b);
  --_warning-text: var(--m2m-color-warning-text, #ffe08a);
  --_focus: var(--m2m-color-focus, #8ab4ff);
  --_backdrop: rgb(0 0 0 / 0.6);
  color-scheme: dark;
`;

const STYLE = `
:host {
  ${LIGHT}
  --_radius: var(--m2m-radius, 8px);
  --_font: var(--m2m-font-family, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif);
  display: block;
  container-type: inline-size;
  font-family: var(--_font);
  font-size: var(--m2m-font-size, 15px);
  line-height: 1.5;
  color: var(--_text);
  background: var(--_bg);
}
:host([theme="dark"]) { ${DARK} }
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) { ${DARK} }
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.root { padding: 1rem 0; }
.identity { margin: 0 0 1rem; color: var(--_muted); font-size: 0.9em; overflow-wrap: anywhere; }
.identity strong { color: var(--_text); font-weight: 600; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }

button {
  font: inherit; font-weight: 600; line-height: 1.2;
  min-height: 2.5rem; padding: 0.55rem 1rem;
  border-radius: var(--_radius); border: 1px solid var(--_border);
  background: var(--_bg); color: var(--_text); cursor: pointer;
}
button:hover { background: var(--_surface); }
button[disabled] { cursor: progress; opacity: 0.75; }
button.primary { background: var(--_primary); border-color: var(--_primary); color: var(--_on-primary); }
button.primary:hover { filter: brightness(1.08); }
button.danger { background: var(--_danger); border-color: var(--_danger); color: var(--_on-danger); }
button.quiet { border-color: transparent; background: transparent; color: var(--_danger); padding: 0.4rem 0.6rem; min-height: 2.25rem; }
button.quiet:hover { background: var(--_surface); }
button.quiet.neutral { color: var(--_primary); }

[role="tablist"] { display: flex; gap: 0.25rem; border-bottom: 1px solid var(--_border); margin-bottom: 1rem; overflow-x: auto; }
[role="tab"] {
  border: 0; border-bottom: 3px solid transparent; border-radius: var(--_radius) var(--_radius) 0 0;
  background: transparent; color: var(--_muted); padding: 0.6rem 0.9rem; white-space: nowrap;
}
[role="tab"][aria-selected="true"] { color: var(--_text); border-bottom-color: var(--_primary); }
[role="tab"]:hover { color: var(--_text); }
[role="tab"]:focus-visible { outline-offset: -3px; }

.panel-head { display: flex; flex-wrap: wrap; gap: 0.75rem 1rem; align-items: center; justify-content: space-between; margin-bottom: 1rem; }
.lead { margin: 0; color: var(--_muted); flex: 1 1 16rem; }
.lead p { margin: 0; }
.lead .policy { margin-top: 0.25rem; font-size: 0.9em; }

.notice {
  border: 1px solid var(--_border); border-radius: var(--_radius); background: var(--_surface);
  padding: 1.25rem; margin: 0.5rem 0;
}
.notice h2 { font-size: 1.05em; margin: 0 0 0.35rem; }
.notice p { margin: 0; color: var(--_muted); }
.notice button { margin-top: 0.9rem; }
.loading { color: var(--_muted); padding: 1rem 0; }

table { width: 100%; border-collapse: collapse; font-size: 0.95em; }
th, td { text-align: left; vertical-align: top; padding: 0.65rem 0.6rem; border-bottom: 1px solid var(--_border); }
th { font-size: 0.85em; font-weight: 600; color: var(--_muted); white-space: nowrap; }
td.description { font-weight: 600; overflow-wrap: anywhere; min-width: 8rem; }
td.description .none { font-weight: 400; color: var(--_muted); font-style: italic; }
td.description .rotation { display: block; font-weight: 400; font-size: 0.85em; color: var(--_muted); }
td.roles { overflow-wrap: anywhere; min-width: 4.5rem; }
th:first-child, td:first-child { padding-left: 0; }
td.nowrap { white-space: nowrap; }
td.actions { text-align: right; width: 1%; white-space: nowrap; padding: 0.3rem 0 0.3rem 0.6rem; }
[aria-busy="true"] table { opacity: 0.7; }
.expired { color: var(--_danger); font-weight: 600; }

@container (max-width: 720px) {
  table, thead, tbody, tr, th, td { display: block; }
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  tr { border: 1px solid var(--_border); border-radius: var(--_radius); padding: 0.5rem 0.75rem; margin-bottom: 0.75rem; }
  td { display: grid; grid-template-columns: 7.5rem 1fr; gap: 0.75rem; border: 0; padding: 0.3rem 0; }
  td::before { content: attr(data-label) / ""; color: var(--_muted); font-size: 0.85em; font-weight: 600; }
  td.description { min-width: 0; }
  td.nowrap { white-space: normal; }
  td.actions { width: auto; text-align: left; display: block; padding: 0.5rem 0 0; }
  td.actions::before { content: none; }
  td.actions button { margin-left: -0.6rem; }
}

dialog {
  width: min(34rem, calc(100vw - 1.5rem)); max-height: calc(100dvh - 1.5rem); overflow: auto;
  border: 1px solid var(--_border); border-radius: calc(var(--_radius) * 1.5);
  background: var(--_bg); color: var(--_text); padding: 1.5rem;
  box-shadow: 0 20px 50px rgb(0 0 0 / 0.3);
}
dialog::backdrop { background: var(--_backdrop); }
dialog h2 { margin: 0 0 0.5rem; font-size: 1.25em; line-height: 1.3; }
dialog p { margin: 0 0 1rem; }
.hint { color: var(--_muted); font-size: 0.9em; }
.field { margin-bottom: 1.1rem; }
.field > label, legend { display: block; font-weight: 600; margin-bottom: 0.35rem; }
fieldset { border: 0; padding: 0; margin: 0 0 1.1rem; min-width: 0; }
legend { padding: 0; }
fieldset .hint { margin: 0 0 0.5rem; }
.choice { display: flex; gap: 0.6rem; align-items: center; padding: 0.3rem 0; overflow-wrap: anywhere; }
.choice input { width: 1.15rem; height: 1.15rem; margin: 0; flex: none; accent-color: var(--_primary); }
input[type="text"], select {
  font: inherit; width: 100%; min-height: 2.6rem; padding: 0.5rem 0.7rem;
  border: 1px solid var(--_border); border-radius: var(--_radius);
  background: var(--_bg); color: var(--_text);
}
input[readonly] { background: var(--_surface); font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em; }
.actions-row { display: flex; flex-wrap: wrap; gap: 0.75rem; justify-content: flex-end; margin-top: 1.5rem; }
.error { color: var(--_danger); font-weight: 600; margin: 0.5rem 0 0; }
.error:empty { display: none; }
.warning {
  background: var(--_warning-bg); color: var(--_warning-text);
  border-radius: var(--_radius); padding: 0.75rem 0.9rem; font-weight: 600;
}
.secret { display: flex; gap: 0.5rem; align-items: stretch; }
.secret input { flex: 1 1 auto; min-width: 0; }
.secret button { flex: none; }
`;

let sheet = null;
function styleSheet() {
  if (sheet === null) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
  }
  return sheet;
}

// --- the element ----------------------------------------------------------------------------

let instances = 0;

export class M2mApiTokens extends HTMLElement {
  static observedAttributes = ["api-base"];

  #token = null;
  #getToken = null;
  #session = null;
  #state = "idle"; // idle | loading | ready | error
  #error = null;
  #tab = null;
  #lists = {}; // tab key -> { state, tokens }
  #creators = new Map();
  #generation = 0;
  #root;
  #announcer;
  #dialog = null;
  #id;

  /** The clock the "Expires in" column reads (milliseconds since the epoch). */
  clock = () => Date.now();

  constructor() {
    super();
    this.#id = `m2m${++instances}`;
    const shadow = this.attachShadow({ mode: "open" });
    shadow.adoptedStyleSheets = [styleSheet()];
    this.#root = h("div", { class: "root", part: "base" });
    this.#announcer = h("div", { class: "sr-only", role: "status", "aria-live": "polite" });
    shadow.append(this.#root, this.#announcer);
  }

  connectedCallback() {
    // A property set before this element was upgraded shadows the accessor: take it over.
    for (const name of ["sessionToken", "getSessionToken"]) {
      if (Object.prototype.hasOwnProperty.call(this, name)) {
        const value = this[name];
        delete this[name];
        this[name] = value;
      }
    }
    // A vendor's script that adds this element and then hands it the session in the same task
    // is not told first that nobody is signed in.
    queueMicrotask(() => {
      if (this.#state === "idle" && this.isConnected) this.reload();
    });
  }

  attributeChangedCallback(_name, before, after) {
    if (before !== after && this.isConnected && this.#state !== "idle") this.reload();
  }

  get sessionToken() {
    return this.#token;
  }

  set sessionToken(value) {
    this.#token = value ? String(value) : null;
    this.#started();
  }

  get getSessionToken() {
    return this.#getToken;
  }

  set getSessionToken(callback) {
    this.#getToken = typeof callback === "function" ? callback : null;
    this.#started();
  }

  /** A session handed over starts the page, or starts it again after a failure; a renewed
   * token on a page already shown changes nothing on it (an open dialog, a secret being
   * copied, stay). `reload()` starts over on purpose. */
  #started() {
    if (this.isConnected && (this.#state === "idle" || this.#state === "error")) this.reload();
  }

  /** Load the session and the current tab again. */
  async reload() {
    const generation = ++this.#generation;
    this.#closeDialog({ restoreFocus: false });
    this.#lists = {};
    this.#session = null;
    if (!this.#token && !this.#getToken) {
      this.#fail(new PortalError("signed-out"));
      return;
    }
    this.#state = "loading";
    this.#render();
    try {
      const session = await this.#request("GET", "portal/v1/session");
      if (generation !== this.#generation) return;
      this.#session = session;
      this.#state = "ready";
      const visible = this.#visibleTabs();
      if (!visible.some((tab) => tab.key === this.#tab)) this.#tab = visible[0]?.key ?? null;
      this.#render();
      if (this.#tab && session.apiTokensEnabled) await this.#loadTab(this.#tab);
    } catch (error) {
      if (generation === this.#generation) this.#fail(error);
    }
  }

  // --- requests ---------------------------------------------------------------------------

  #base() {
    const base = this.getAttribute("api-base") || new URL(".", import.meta.url).href;
    return base.endsWith("/") ? base : `${base}/`;
  }

  async #sessionJwt() {
    if (this.#getToken) {
      try {
        return await this.#getToken();
      } catch {
        throw new PortalError("session");
      }
    }
    return this.#token;
  }

  async #request(method, path, body) {
    const jwt = await this.#sessionJwt();
    if (!jwt) throw new PortalError("session");
    const headers = { Authorization: `Bearer ${jwt}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(new URL(path, this.#base()), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit", // the session travels in Authorization, never as a cookie
        cache: "no-store",
        mode: "cors",
      });
    } catch (failure) {
      // Offline, or refused by CORS: the browser does not say which, so tell the developer both.
      console.warn(
        `m2m-api-tokens: no answer from ${this.#base()} (offline, down, or this page's origin ` +
          `${window.location.origin} is not in the service's M2M_EMBED_ORIGINS)`,
      );
      throw new PortalError(failure instanceof TypeError ? "unreachable" : "unavailable");
    }
    if (!response.ok) throw await errorOf(response);
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : null;
  }

  #fail(error) {
    const reason = error instanceof PortalError ? error.reason : "unavailable";
    this.#state = "error";
    this.#error = MESSAGES[reason] ? reason : "unavailable";
    if (reason === "disabled" && this.#session) this.#session.apiTokensEnabled = false;
    this.#render();
    if (reason === "session") {
      this.dispatchEvent(new CustomEvent("m2m-session-expired", { bubbles: true, composed: true }));
    }
  }

  // --- what the user may do -----------------------------------------------------------------

  #can(action, tab) {
    return this.#session.permissions.includes(`fe.secure.${action}.${tab.resource}`);
  }

  #visibleTabs() {
    return TABS.filter((tab) => this.#can("read", tab));
  }

  #tabOf(key) {
    return TABS.find((tab) => tab.key === key);
  }

  /** The account's token policy as it bears on this tab's tokens, or null when it sets nothing. */
  #policyNote(tab) {
    const policy = this.#session.tokenPolicy;
    if (!policy) return null;
    const rules = [];
    if (policy.maxExpiresInMinutes !== null) rules.push(`tokens expire within ${duration(policy.maxExpiresInMinutes)}`);
    else if (policy.requireExpiration) rules.push("tokens must expire");
    const kind = this.#kindOfEnvironment() === KINDS.AccessToken ? "AccessToken" : "ApiToken";
    const most = policy.maxTokens?.[`${tab.key}${kind}`];
    if (most !== null && most !== undefined) {
      rules.push(`at most ${most} ${tab.key === "user" ? "per person" : "in the account"}`);
    }
    return rules.length ? `Your account's token policy: ${rules.join("; ")}.` : null;
  }

  #kindOfEnvironment() {
    return KINDS[this.#session.machineToMachineAuthStrategy] ?? KINDS.ClientCredentials;
  }

  // --- the token lists ------------------------------------------------------------------------

  async #loadTab(key) {
    const generation = this.#generation;
    const tab = this.#tabOf(key);
    // A list already shown stays while it is read again (no flash of "Loading").
    const shown = this.#lists[key];
    this.#lists[key] = shown?.tokens.length
      ? { state: "refreshing", tokens: shown.tokens }
      : { state: "loading", tokens: [] };
    this.#renderPanel();
    try {
      // Both kinds: tokens made under the other strategy still work until they are deleted.
      const reads = Object.entries(KINDS).map(async ([strategy, kind]) => {
        const answer = await this.#request("GET", `identity/resources/${tab.scope}/${kind.segment}/v1`);
        const rows = Array.isArray(answer) ? answer : answer?.accessTokens ?? [];
        return rows.map((row) => ({
          id: row[kind.id],
          strategy,
          kind,
          description: row.description ?? "",
          createdBy: tab.key === "user" ? this.#session.userId : row.createdByUserId ?? null,
          createdAt: row.createdAt,
          expires: row.expires ?? null,
          lastUsedAt: row.lastUsedAt ?? null,
          roleIds: row.roleIds ?? [],
          permissionIds: row.permissionIds ?? [],
          rotatedAt: row.rotatedAt ?? null,
          previousSecretExpires: row.previousSecretExpires ?? null,
          previousSecretLastUsedAt: row.previousSecretLastUsedAt ?? null,
          replacedBy: row.replacedBy ?? null,
        }));
      });
      if (tab.key === "tenant") reads.push(this.#loadCreators());
      const [credentials, accessTokens] = await Promise.all(reads);
      if (generation !== this.#generation) return;
      const tokens = [...credentials, ...accessTokens].sort((a, b) =>
        String(b.createdAt).localeCompare(String(a.createdAt)),
      );
      this.#lists[key] = { state: "ready", tokens };
      this.#renderPanel();
    } catch (error) {
      if (generation === this.#generation) this.#fail(error);
    }
  }

  async #loadCreators() {
    const members = await this.#request("GET", "portal/v1/token-creators");
    this.#creators = new Map(members.map((member) => [member.userId, member]));
    return [];
  }

  #createdBy(token) {
    if (token.createdBy === this.#session.userId) return "You";
    if (token.createdBy === null) return "Service provider";
    const member = this.#creators.get(token.createdBy);
    return member ? member.name || member.email : "Former member";
  }

  #rolesOf(token, tab) {
    if (tab.key === "user") return "Your roles";
    const names = new Map(this.#session.roles.map((role) => [role.id, role.name]));
    const known = token.roleIds.filter((id) => names.has(id)).map((id) => names.get(id));
    const others = token.roleIds.length - known.length;
    const parts = [...known];
    if (others) parts.push(plural(others, "other role"));
    if (!parts.length && token.permissionIds.length) parts.push(plural(token.permissionIds.length, "permission"));
    return parts.length ? parts.join(", ") : "None";
  }

  // --- rendering ------------------------------------------------------------------------------

  #render() {
    const focusKey = this.#focusedKey();
    const content = [];
    if (this.#state === "loading") {
      content.push(h("p", { class: "loading", role: "status", text: "Loading your API tokens…" }));
    } else if (this.#state === "error") {
      content.push(this.#notice(this.#error));
    } else if (this.#state === "ready") {
      content.push(this.#identity());
      const tabs = this.#visibleTabs();
      if (!this.#session.apiTokensEnabled) content.push(this.#notice("disabled"));
      else if (!tabs.length) content.push(this.#notice("no-access"));
      else content.push(this.#tabList(tabs), this.#panel());
    }
    this.#root.replaceChildren(...content);
    this.#focus(focusKey);
  }

  #renderPanel() {
    const current = this.#root.querySelector('[role="tabpanel"]');
    if (!current) return;
    const focusKey = this.#focusedKey();
    current.replaceWith(this.#panel());
    this.#focus(focusKey);
  }

  #focusedKey() {
    return this.shadowRoot.activeElement?.dataset?.focus ?? null;
  }

  #focus(key) {
    if (!key) return;
    this.#root.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus();
  }

  #notice(reason) {
    const message = MESSAGES[reason];
    const titleId = `${this.#id}-notice`;
    return h(
      "div",
      { class: "notice", role: reason === "disabled" || reason === "no-access" ? "status" : "alert", "aria-labelledby": titleId },
      h("h2", { id: titleId, text: message.title }),
      h("p", { text: message.body }),
      message.retry
        ? h("button", { type: "button", "data-focus": "retry", onclick: () => this.reload(), text: "Try again" })
        : null,
    );
  }

  #identity() {
    const session = this.#session;
    const who = session.name ? `${session.name} (${session.email})` : session.email;
    return h(
      "p",
      { class: "identity", part: "identity" },
      "Signed in as ",
      h("strong", { text: who }),
      " in ",
      h("strong", { text: session.tenantName }),
    );
  }

  #tabList(tabs) {
    const list = h("div", { role: "tablist", "aria-label": "Token types" });
    for (const tab of tabs) {
      const selected = tab.key === this.#tab;
      list.append(
        h("button", {
          type: "button",
          role: "tab",
          id: `${this.#id}-tab-${tab.key}`,
          "aria-selected": String(selected),
          "aria-controls": `${this.#id}-panel`,
          tabindex: selected ? "0" : "-1",
          "data-focus": `tab-${tab.key}`,
          text: tab.label,
          onclick: () => this.#select(tab.key),
          onkeydown: (event) => this.#tabKey(event, tabs),
        }),
      );
    }
    return list;
  }

  #tabKey(event, tabs) {
    const index = tabs.findIndex((tab) => tab.key === this.#tab);
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = tabs[(moves[event.key] + tabs.length) % tabs.length];
    this.#select(next.key);
    this.#focus(`tab-${next.key}`);
  }

  #select(key) {
    if (key === this.#tab) return;
    this.#tab = key;
    const focusKey = this.#focusedKey();
    this.#render();
    this.#focus(focusKey);
    this.#loadTab(key);
  }

  #panel() {
    const tab = this.#tabOf(this.#tab);
    const list = this.#lists[tab.key] ?? { state: "loading", tokens: [] };
    const head = h(
      "div",
      { class: "panel-head" },
      h("div", { class: "lead" }, h("p", { text: tab.lead }), this.#policyNote(tab) ? h("p", { class: "policy", text: this.#policyNote(tab) }) : null),
      this.#can("write", tab)
        ? h("button", {
            type: "button",
            class: "primary",
            "data-focus": `create-${tab.key}`,
            text: "Create token",
            onclick: () => this.#openCreate(tab),
          })
        : null,
    );
    let body;
    if (list.state === "loading") {
      body = h("p", { class: "loading", role: "status", text: "Loading tokens…" });
    } else if (!list.tokens.length) {
      body = h("div", { class: "notice" }, h("p", { text: tab.empty }));
    } else {
      body = this.#table(tab, list.tokens);
    }
    return h(
      "section",
      {
        role: "tabpanel",
        id: `${this.#id}-panel`,
        "aria-labelledby": `${this.#id}-tab-${tab.key}`,
        "aria-busy": list.state === "ready" ? "false" : "true",
      },
      head,
      body,
    );
  }

  #table(tab, tokens) {
    const columns = ["Description", "Kind", "Created by", "Created", "Expires in", "Last used", "Roles"];
    const canDelete = this.#can("delete", tab);
    const canRotate = this.#can("write", tab);
    const now = this.clock();
    const header = h(
      "tr",
      {},
      columns.map((label) => h("th", { scope: "col", text: label })),
      canDelete || canRotate ? h("th", { scope: "col" }, h("span", { class: "sr-only", text: "Actions" })) : null,
    );
    const rows = tokens.map((token) => {
      const left = expiresIn(token.expires, now);
      const created = token.createdAt ? new Date(token.createdAt) : null;
      return h(
        "tr",
        {},
        h(
          "td",
          { class: "description", "data-label": "Description" },
          token.description ? token.description : h("span", { class: "none", text: "No description" }),
          this.#rotationState(token, now),
        ),
        h("td", { class: "nowrap", "data-label": "Kind", text: token.kind.label }),
        h("td", { "data-label": "Created by", text: this.#createdBy(token) }),
        h(
          "td",
          { class: "nowrap", "data-label": "Created" },
          created
            ? h("time", { datetime: token.createdAt, title: DATE_TIME.format(created), text: DATE.format(created) })
            : "—",
        ),
        h(
          "td",
          { class: "nowrap", "data-label": "Expires in" },
          token.expires
            ? h("time", {
                datetime: token.expires,
                title: DATE_TIME.format(new Date(token.expires)),
                class: left === "Expired" ? "expired" : null,
                text: left,
              })
            : left,
        ),
        h(
          "td",
          { class: "nowrap", "data-label": "Last used" },
          token.lastUsedAt
            ? h("time", {
                datetime: token.lastUsedAt,
                title: DATE_TIME.format(new Date(token.lastUsedAt)),
                text: lastUsed(token.lastUsedAt, now),
              })
            : h("span", { class: "none", text: "Never" }),
        ),
        h("td", { class: "roles", "data-label": "Roles", text: this.#rolesOf(token, tab) }),
        canDelete || canRotate
          ? h(
              "td",
              { class: "actions" },
              canRotate && previousSecretWorks(token, now)
                ? h("button", {
                    type: "button",
                    class: "quiet neutral",
                    "data-focus": `end-${token.id}`,
                    "aria-label": `End overlap of ${token.description || "token without description"}`,
                    text: "End overlap",
                    onclick: () => this.#openEndOverlap(tab, token),
                  })
                : null,
              // A rolled token has its successor; a running overlap is ended first; an expired
              // token has nothing left to rotate.
              canRotate && !token.replacedBy && !previousSecretWorks(token, now) && left !== "Expired"
                ? h("button", {
                    type: "button",
                    class: "quiet neutral",
                    "data-focus": `rotate-${token.id}`,
                    "aria-label": `Rotate ${token.description || "token without description"}`,
                    text: "Rotate",
                    onclick: () => this.#openRotate(tab, token),
                  })
                : null,
              canDelete
                ? h("button", {
                    type: "button",
                    class: "quiet",
                    "data-focus": `delete-${token.id}`,
                    "aria-label": `Delete ${token.description || "token without description"}`,
                    text: "Delete",
                    onclick: () => this.#openDelete(tab, token),
                  })
                : null,
            )
          : null,
      );
    });
    return h(
      "table",
      {},
      h("caption", { class: "sr-only", text: `${tab.label} of ${this.#session.tenantName}` }),
      h("thead", {}, header),
      h("tbody", {}, rows),
    );
  }

  // --- dialogs (WAI-ARIA dialog pattern: labelled, focus kept inside, Escape closes, focus
  // returns to the control that opened it) -------------------------------------------------------

  #openDialog(dialog, opener, initial) {
    this.#closeDialog({ restoreFocus: false });
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.#closeDialog();
    });
    dialog.addEventListener("keydown", (event) => this.#trapFocus(event, dialog));
    this.#dialog = { element: dialog, opener };
    this.shadowRoot.append(dialog);
    dialog.showModal();
    (initial ?? dialog.querySelector("input, select, button"))?.focus();
  }

  #trapFocus(event, dialog) {
    if (event.key !== "Tab") return;
    const focusable = [...dialog.querySelectorAll("button, input, select, textarea, [tabindex]")].filter(
      (element) => !element.disabled && element.tabIndex >= 0 && element.getClientRects().length,
    );
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    const active = this.shadowRoot.activeElement;
    if (event.shiftKey && (active === first || !dialog.contains(active))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !dialog.contains(active))) {
      event.preventDefault();
      first.focus();
    }
  }

  /** Close the open dialog and take it out of the page (with any secret it showed). */
  #closeDialog({ restoreFocus = true } = {}) {
    const open = this.#dialog;
    if (!open) return;
    this.#dialog = null;
    if (open.element.open) open.element.close();
    open.element.remove();
    if (restoreFocus) {
      this.#focus(open.opener);
      if (!this.#root.contains(this.shadowRoot.activeElement)) this.#focus(`tab-${this.#tab}`);
    }
  }

  #openCreate(tab) {
    const kind = this.#kindOfEnvironment();
    const ids = (name) => `${this.#id}-${name}`;
    const error = h("p", { class: "error", role: "alert" });
    const description = h("input", {
      type: "text",
      id: ids("description"),
      name: "description",
      required: true,
      maxlength: "1024",
      autocomplete: "off",
      "aria-describedby": ids("description-hint"),
    });
    const roleBoxes = [];
    let roles = null;
    if (tab.key === "tenant") {
      roles = h(
        "fieldset",
        { "aria-describedby": ids("roles-hint") },
        h("legend", { text: "Roles" }),
        h("p", {
          class: "hint",
          id: ids("roles-hint"),
          text: "The token can do what these roles allow. You can give only roles you hold.",
        }),
        this.#session.roles.map((role, index) => {
          const box = h("input", { type: "checkbox", id: ids(`role-${index}`), value: role.id });
          roleBoxes.push(box);
          return h("div", { class: "choice" }, box, h("label", { for: ids(`role-${index}`), text: role.name }));
        }),
      );
    }
    const choices = allowedExpirations(this.#session.tokenPolicy);
    const preferred = choices.some((choice) => choice.label === DEFAULT_EXPIRATION)
      ? DEFAULT_EXPIRATION
      : choices[choices.length - 1].label;
    const policyNote = this.#policyNote(tab);
    const expiration = h(
      "select",
      { id: ids("expiration"), name: "expiration", "aria-describedby": policyNote ? ids("expiration-policy") : null },
      choices.map((choice) =>
        h("option", {
          value: choice.minutes === null ? "" : String(choice.minutes),
          selected: choice.label === preferred,
          text: choice.label,
        }),
      ),
    );
    const submit = h("button", { type: "submit", class: "primary", text: "Create token" });
    const titleId = ids("create-title");
    const form = h(
      "form",
      { novalidate: true },
      h("h2", { id: titleId, text: `Create ${tab.noun}` }),
      h("p", {
        class: "hint",
        text:
          kind === KINDS.ClientCredentials
            ? "You get a client ID and a secret, which a machine exchanges for short-lived access."
            : "You get an access token, which a machine sends with each call.",
      }),
      h(
        "div",
        { class: "field" },
        h("label", { for: ids("description"), text: "Description" }),
        h("p", { class: "hint", id: ids("description-hint"), text: "What the token is for, so you recognise it later." }),
        description,
      ),
      roles,
      h(
        "div",
        { class: "field" },
        h("label", { for: ids("expiration"), text: "Expiration" }),
        policyNote ? h("p", { class: "hint", id: ids("expiration-policy"), text: policyNote }) : null,
        expiration,
      ),
      error,
      h(
        "div",
        { class: "actions-row" },
        h("button", { type: "button", text: "Cancel", onclick: () => this.#closeDialog() }),
        submit,
      ),
    );
    const dialog = h("dialog", { "aria-labelledby": titleId }, form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      const text = description.value.trim();
      const roleIds = roleBoxes.filter((box) => box.checked).map((box) => box.value);
      if (!text) {
        error.textContent = "Enter a description.";
        description.focus();
        return;
      }
      if (tab.key === "tenant" && kind === KINDS.ClientCredentials && !roleIds.length) {
        error.textContent = "Choose at least one role.";
        roleBoxes[0]?.focus();
        return;
      }
      const body = { description: text };
      if (expiration.value) body.expiresInMinutes = Number(expiration.value);
      if (tab.key === "tenant") body.roleIds = roleIds;
      const version = tab.key === "tenant" && kind === KINDS.ClientCredentials ? "v2" : "v1";
      submit.disabled = true;
      submit.textContent = "Creating…";
      try {
        const created = await this.#request("POST", `identity/resources/${tab.scope}/${kind.segment}/${version}`, body);
        if (this.#dialog?.element !== dialog) return;
        this.#showSecret(dialog, tab, kind, created);
        this.#loadTab(tab.key);
      } catch (failure) {
        submit.disabled = false;
        submit.textContent = "Create token";
        this.#actionFailed(failure, error, "The token was not created");
      }
    });
    this.#openDialog(dialog, `create-${tab.key}`, description);
  }

  /** The secret, this once: closing the dialog removes it from the page. */
  #showSecret(dialog, tab, kind, created, rotation = null) {
    const ids = (name) => `${this.#id}-${name}`;
    const fields =
      kind === KINDS.ClientCredentials
        ? [
            ["Client ID", "client ID", created.clientId],
            ["Secret", "secret", created.secret],
          ]
        : [["Access token", "access token", created.secret]];
    const titleId = ids("created-title");
    const status = h("p", { class: "hint", role: "status" });
    const content = h(
      "div",
      {},
      h("h2", { id: titleId, text: rotation ? rotation.title : `Your new ${tab.noun}` }),
      rotation ? h("p", { class: "hint" }, ...rotation.note) : null,
      h("p", {
        class: "warning",
        text: "Copy the secret now and keep it safe: it is shown only this once, and closing this dialog removes it.",
      }),
      fields.map(([label, noun, value], index) => {
        const id = ids(`secret-${index}`);
        const input = h("input", { type: "text", id, readonly: true, value, spellcheck: "false", autocomplete: "off" });
        return h(
          "div",
          { class: "field" },
          h("label", { for: id, text: label }),
          h(
            "div",
            { class: "secret" },
            input,
            h("button", {
              type: "button",
              text: `Copy ${noun}`,
              onclick: (event) => this.#copy(event.currentTarget, input, label, noun, status),
            }),
          ),
        );
      }),
      status,
      h(
        "div",
        { class: "actions-row" },
        h("button", { type: "button", class: "primary", text: "Done", onclick: () => this.#closeDialog() }),
      ),
    );
    dialog.setAttribute("aria-labelledby", titleId);
    dialog.replaceChildren(content);
    dialog.querySelector("button")?.focus();
    this.#announce(rotation ? rotation.announce : `${tab.noun[0].toUpperCase()}${tab.noun.slice(1)} created.`);
  }

  // --- rotation (a new secret, or a new access token, while the old one works on) --------------

  /** Where a token stands in a rotation, or null if it was never rotated. */
  #rotationState(token, now) {
    const at = (iso) => h("time", { datetime: iso, title: DATE_TIME.format(new Date(iso)), text: DATE_TIME.format(new Date(iso)) });
    if (token.replacedBy) {
      return h("span", { class: "rotation" }, "Replaced: works until ", at(token.expires));
    }
    if (!token.rotatedAt) return null;
    if (previousSecretWorks(token, now)) {
      return h(
        "span",
        { class: "rotation" },
        "Previous secret works until ",
        at(token.previousSecretExpires),
        token.previousSecretLastUsedAt ? h("span", {}, " · last used ", at(token.previousSecretLastUsedAt)) : " · not used since the rotation",
      );
    }
    return h("span", { class: "rotation" }, "Secret rotated ", at(token.rotatedAt));
  }

  #openRotate(tab, token) {
    const kind = token.kind;
    const accessToken = kind === KINDS.AccessToken;
    const ids = (name) => `${this.#id}-${name}`;
    const error = h("p", { class: "error", role: "alert" });
    const choices = allowedOverlaps(this.#session.tokenPolicy);
    const preferred = defaultOverlap(choices);
    const overlap = h(
      "select",
      { id: ids("overlap"), name: "overlap" },
      choices.map((choice) => h("option", { value: String(choice.minutes), selected: choice.minutes === preferred, text: choice.label })),
    );
    const submit = h("button", { type: "submit", class: "primary", text: accessToken ? "Roll token" : "Rotate secret" });
    const titleId = ids("rotate-title");
    const name = token.description || "this token";
    const form = h(
      "form",
      { novalidate: true },
      h("h2", { id: titleId, text: accessToken ? "Roll access token" : "Rotate secret" }),
      h("p", {
        class: "hint",
        text: accessToken
          ? `A new access token replaces ${name}, with the same description, roles and expiration. The old one keeps working for the overlap you choose, then is deleted.`
          : `A new secret for ${name}, same client ID. The previous secret keeps working for the overlap you choose, so your machines can move over one at a time.`,
      }),
      h("div", { class: "field" }, h("label", { for: ids("overlap"), text: "Old one keeps working for" }), overlap),
      error,
      h(
        "div",
        { class: "actions-row" },
        h("button", { type: "button", text: "Cancel", onclick: () => this.#closeDialog() }),
        submit,
      ),
    );
    const dialog = h("dialog", { "aria-labelledby": titleId }, form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      const minutes = Number(overlap.value);
      submit.disabled = true;
      submit.textContent = accessToken ? "Rolling…" : "Rotating…";
      try {
        const answer = await this.#request(
          "POST",
          `identity/resources/${tab.scope}/${kind.segment}/v1/${encodeURIComponent(token.id)}/rotate`,
          { overlapMinutes: minutes },
        );
        if (this.#dialog?.element !== dialog) return;
        const old = accessToken ? "The old access token" : "The previous secret";
        const until = new Date(this.clock() + minutes * 60_000);
        const note =
          minutes === 0
            ? [`${old} no longer works.`]
            : [`${old} works until `, h("time", { datetime: until.toISOString(), text: DATE_TIME.format(until) }), "."];
        this.#dialog.opener = `tab-${tab.key}`;
        this.#showSecret(dialog, tab, kind, answer, {
          title: accessToken ? "Your new access token" : "Your new secret",
          note,
          announce: accessToken ? "Access token rolled." : "Secret rotated.",
        });
        this.#loadTab(tab.key);
      } catch (failure) {
        submit.disabled = false;
        submit.textContent = accessToken ? "Roll token" : "Rotate secret";
        this.#actionFailed(failure, error, "Nothing was rotated");
      }
    });
    this.#openDialog(dialog, `rotate-${token.id}`, overlap);
  }

  #openEndOverlap(tab, token) {
    const ids = (name) => `${this.#id}-${name}`;
    const error = h("p", { class: "error", role: "alert" });
    const confirm = h("button", { type: "button", class: "danger", text: "End overlap" });
    const cancel = h("button", { type: "button", text: "Cancel", onclick: () => this.#closeDialog() });
    const dialog = h(
      "dialog",
      { role: "alertdialog", "aria-labelledby": ids("end-title"), "aria-describedby": ids("end-body") },
      h("h2", { id: ids("end-title"), text: "End the overlap now?" }),
      h(
        "p",
        { id: ids("end-body") },
        "The previous secret of ",
        h("strong", { text: token.description || "this token" }),
        token.previousSecretLastUsedAt
          ? " stops working at once. It was used since the rotation: make sure every machine has the new secret."
          : " stops working at once. It has not been used since the rotation.",
      ),
      error,
      h("div", { class: "actions-row" }, cancel, confirm),
    );
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      error.textContent = "";
      try {
        await this.#request(
          "DELETE",
          `identity/resources/${tab.scope}/${token.kind.segment}/v1/${encodeURIComponent(token.id)}/rotation`,
        );
      } catch (failure) {
        confirm.disabled = false;
        this.#actionFailed(failure, error, "The overlap was not ended");
        return;
      }
      if (this.#dialog?.element !== dialog) return;
      this.#dialog.opener = `tab-${tab.key}`;
      this.#closeDialog();
      this.#announce("Overlap ended: only the new secret works.");
      await this.#loadTab(tab.key);
      this.#focus(`tab-${tab.key}`);
    });
    this.#openDialog(dialog, `end-${token.id}`, cancel);
  }

  async #copy(button, input, label, noun, status) {
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = `${label} copied.`;
      button.textContent = "Copied";
    } catch {
      input.select();
      status.textContent = `Copying is not allowed here: the ${noun} is selected, press Ctrl+C (⌘C) to copy it.`;
    }
  }

  #openDelete(tab, token) {
    const ids = (name) => `${this.#id}-${name}`;
    const error = h("p", { class: "error", role: "alert" });
    const confirm = h("button", { type: "button", class: "danger", text: "Delete token" });
    const cancel = h("button", { type: "button", text: "Cancel", onclick: () => this.#closeDialog() });
    const name = token.description || "This token";
    const dialog = h(
      "dialog",
      { role: "alertdialog", "aria-labelledby": ids("delete-title"), "aria-describedby": ids("delete-body") },
      h("h2", { id: ids("delete-title"), text: "Delete this token?" }),
      h(
        "p",
        { id: ids("delete-body") },
        h("strong", { text: name }),
        " stops working at once: every machine using it is refused. This cannot be undone.",
      ),
      error,
      h("div", { class: "actions-row" }, cancel, confirm),
    );
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      confirm.textContent = "Deleting…";
      error.textContent = "";
      try {
        await this.#request("DELETE", `identity/resources/${tab.scope}/${token.kind.segment}/v1/${encodeURIComponent(token.id)}`);
      } catch (failure) {
        if (!(failure instanceof PortalError && failure.reason === "gone")) {
          confirm.disabled = false;
          confirm.textContent = "Delete token";
          this.#actionFailed(failure, error, "The token was not deleted");
          return;
        }
      }
      if (this.#dialog?.element !== dialog) return;
      this.#dialog.opener = `tab-${tab.key}`;
      this.#closeDialog();
      this.#announce("Token deleted.");
      await this.#loadTab(tab.key);
      this.#focus(`tab-${tab.key}`);
    });
    this.#openDialog(dialog, `delete-${token.id}`, cancel);
  }

  /** A failed create or delete: the session and service problems replace the page (the dialog
   * goes); anything else is said in the dialog. */
  #actionFailed(failure, error, what) {
    const reason = failure instanceof PortalError ? failure.reason : "unavailable";
    if (reason === "invalid" || reason === "gone") {
      error.textContent = failure.detail ? `${what}: ${failure.detail}` : `${what}.`;
      return;
    }
    this.#closeDialog({ restoreFocus: false });
    this.#fail(failure);
  }

  #announce(text) {
    this.#announcer.textContent = "";
    this.#announcer.textContent = text;
  }
}

if (!customElements.get("m2m-api-tokens")) customElements.define("m2m-api-tokens", M2mApiTokens);
