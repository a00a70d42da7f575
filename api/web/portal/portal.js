// The hosted /portal page: the session JWT arrives in the URL fragment (`/portal#token=...`),
// which no request carries to any server. It leaves the address bar (and the history entry)
// before anything else runs, and lives on in this page's memory only.

const fragment = new URLSearchParams(window.location.hash.slice(1));
const token = fragment.get("token");
if (window.location.hash) {
  window.history.replaceState(window.history.state, "", window.location.pathname + window.location.search);
}

const element = document.querySelector("m2m-api-tokens");
if (element && token) {
  // Set before the component is defined: it takes the value over when it upgrades.
  element.sessionToken = token;
}
await import("../../m2m-api-tokens.js");
