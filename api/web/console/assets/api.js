// The console's calls to the service, as the signed-in vendor.
//
// The vendor token lives in sessionStorage (this tab only, gone when it closes), never in
// localStorage or a cookie. A 401 on a signed-in call means the token expired or the vendor
// secret changed: the session ends and the page returns to sign-in.

const SESSION_KEY = "m2m-console-session";

/** Raised for a refused call; `message` is the service's own first error. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The session ended under a call: the page shows sign-in with a message. */
export class SessionExpired extends Error {}

/** Tells the page when the session ends without the vendor signing out. */
export const sessionEvents = new EventTarget();

function stored() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    return session && typeof session.token === "string" ? session : null;
  } catch {
    return null;
  }
}

export function signedIn() {
  return stored() !== null;
}

export function signOut() {
  sessionStorage.removeItem(SESSION_KEY);
}

function expire() {
  signOut();
  sessionEvents.dispatchEvent(new Event("expired"));
  return new SessionExpired("Your session has expired. Sign in again.");
}

async function errorOf(response) {
  let message = `The service answered ${response.status}.`;
  try {
    const body = await response.json();
    if (Array.isArray(body.errors) && body.errors.length > 0) message = body.errors.join("; ");
  } catch {
    // not JSON: keep the status
  }
  if (response.status >= 500) message = "The service is unavailable right now. Try again in a moment.";
  return new ApiError(response.status, message);
}

/** Sign in with the vendor clientId and secret; an ApiError (401) when they are wrong. */
export async function signIn(clientId, secret) {
  const response = await fetch("/auth/vendor", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ clientId, secret }),
    credentials: "omit",
    cache: "no-store",
  });
  if (!response.ok) {
    if (response.status === 401 || response.status === 400) {
      throw new ApiError(response.status, "The client ID or secret is wrong.");
    }
    throw await errorOf(response);
  }
  const { token, expiresIn } = await response.json();
  const expiresAt = Date.now() + expiresIn * 1000;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expiresAt }));
}

/**
 * One call as the vendor. `tenantId` and `userId` go in frontegg-tenant-id / frontegg-user-id.
 * Answers the parsed JSON body (null for an empty one).
 */
export async function call(method, path, { body, tenantId, userId } = {}) {
  const session = stored();
  if (session === null || session.expiresAt <= Date.now()) throw expire();
  const headers = { "x-access-token": session.token };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (tenantId) headers["frontegg-tenant-id"] = tenantId;
  if (userId) headers["frontegg-user-id"] = userId;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "The service cannot be reached. Check your connection and try again.");
  }
  if (response.status === 401) throw expire();
  if (!response.ok) throw await errorOf(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Paths of the Frontegg routes the console uses. */
export const paths = {
  configuration: "/identity/resources/configurations/v1",
  roles: "/identity/resources/roles/v1",
  permissions: "/identity/resources/permissions/v1",
  jobs: "/ops/jobs",
  leaks: "/leaks",
  eventTypes: "/events/types",
  eventEndpoints: "/events/endpoints",
  eventEndpoint: (id) => `/events/endpoints/${encodeURIComponent(id)}`,
  eventEndpointTest: (id) => `/events/endpoints/${encodeURIComponent(id)}/test`,
  eventEndpointSecret: (id) => `/events/endpoints/${encodeURIComponent(id)}/secret`,
  eventEndpointDeliveries: (id) => `/events/endpoints/${encodeURIComponent(id)}/deliveries`,
  eventEndpointRedeliver: (id, deliveryId) =>
    `/events/endpoints/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(deliveryId)}/redeliver`,
  tenants: "/console/v1/tenants",
  limits: "/console/v1/limits",
  tenant: (tenantId) => `/tenants/resources/tenants/v1/${encodeURIComponent(tenantId)}`,
  tenantTokens: (tenantId) => `/console/v1/tenants/${encodeURIComponent(tenantId)}/tokens`,
  audits: (query) => `/audits/v1?${new URLSearchParams(Object.entries(query).filter(([, value]) => value != null))}`,
  rolePermissions: (roleId) => `/identity/resources/roles/v1/${encodeURIComponent(roleId)}/permissions`,
  tokenPolicy: "/identity/resources/tenants/token-policy/v1",
  // "Revoke every token": of an account (its users' included), or of one user.
  tenantEveryToken: (tenantId) => `/tenants/resources/tenants/v1/${encodeURIComponent(tenantId)}/tokens`,
  userEveryToken: (userId) => `/identity/resources/users/v1/${encodeURIComponent(userId)}/tokens`,
};
