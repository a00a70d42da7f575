// Accounts: the tenants (searched, a page at a time) and, for one tenant, every token in it:
// its own tokens of both kinds and its users' personal tokens. The vendor creates account
// tokens of the environment's kind here, rotates any token (a new secret, or a new access token,
// while the old one works on for an overlap), deletes any token, revokes every token of the
// account or of one user, and reads and edits the account's token policy.

import { activitySection } from "./activity.js";
import { ApiError, call, paths } from "./api.js";
import { confirmDialog, openDialog } from "./dialogs.js";
import { expiresIn, h, plural, table, uid, when } from "./dom.js";
import { KIND_LABELS } from "./settings.js";

const PAGE = 25;

// --- the list of accounts ---------------------------------------------------------------------

export async function accountsView(ctx) {
  ctx.title("Accounts");
  const search = ctx.query.get("search") ?? "";
  const offset = Math.max(0, Number.parseInt(ctx.query.get("offset") ?? "0", 10) || 0);
  const query = new URLSearchParams({ search, offset: String(offset), limit: String(PAGE) });
  const page = await call("GET", `${paths.tenants}?${query}`);
  const go = (changes) => {
    const next = new URLSearchParams({ search, offset: String(offset), ...changes });
    if (!next.get("search")) next.delete("search");
    if (next.get("offset") === "0") next.delete("offset");
    const rest = next.toString();
    ctx.go(`#/accounts${rest ? `?${rest}` : ""}`);
  };
  const input = h("input", { id: "account-search", type: "search", name: "search", value: search, autocomplete: "off" });
  const searchForm = h(
    "form",
    {
      role: "search",
      class: "search",
      onsubmit: (event) => {
        event.preventDefault();
        go({ search: input.value.trim(), offset: "0" });
      },
    },
    h("label", { for: "account-search", text: "Search accounts" }),
    h("div", { class: "inline" }, input, h("button", { type: "submit", class: "secondary", text: "Search" })),
  );
  const first = page.total === 0 ? 0 : offset + 1;
  const last = offset + page.items.length;
  const summary =
    page.total === 0
      ? search
        ? `No account matches “${search}”.`
        : "No accounts yet. Accounts are created through the API (POST /tenants/resources/tenants/v1)."
      : `Accounts ${first.toLocaleString("en")} to ${last.toLocaleString("en")} of ${page.total.toLocaleString("en")}` +
        (search ? ` matching “${search}”` : "");
  const rows = table(
    "Accounts",
    [
      {
        label: "Name",
        cell: (tenant) => h("a", { href: `#/accounts/${encodeURIComponent(tenant.tenantId)}`, text: tenant.name }),
      },
      { label: "Account ID", cell: (tenant) => h("code", { text: tenant.tenantId }) },
      { label: "Created", cell: (tenant) => when(tenant.createdAt) },
    ],
    page.items,
    { empty: "" },
  );
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages of accounts" },
    h("button", {
      type: "button",
      class: "secondary",
      text: "Previous page",
      disabled: offset === 0,
      onclick: () => go({ offset: String(Math.max(0, offset - PAGE)) }),
    }),
    h("button", {
      type: "button",
      class: "secondary",
      text: "Next page",
      disabled: last >= page.total,
      onclick: () => go({ offset: String(offset + PAGE) }),
    }),
  );
  return h(
    "div",
    { class: "view" },
    h("h1", { tabindex: "-1", text: "Accounts" }),
    searchForm,
    h("p", { class: "summary", role: "status", text: summary }),
    page.items.length ? rows : null,
    page.total > PAGE || offset > 0 ? pager : null,
  );
}

// --- one account and its tokens ---------------------------------------------------------------

const KIND_NAMES = {
  tenantApiToken: "Client credentials",
  tenantAccessToken: "Access token",
  userApiToken: "Client credentials",
  userAccessToken: "Access token",
};

// How the vendor deletes (and, under …/rotate and …/rotation, rotates) each kind; the owner of
// a personal token is named too.
const DELETE_PATHS = {
  tenantApiToken: "/identity/resources/tenants/api-tokens/v1/",
  tenantAccessToken: "/identity/resources/tenants/access-tokens/v1/",
  userApiToken: "/identity/resources/users/api-tokens/v1/",
  userAccessToken: "/identity/resources/users/access-tokens/v1/",
};

const ACCESS_TOKEN_KINDS = new Set(["tenantAccessToken", "userAccessToken"]);

// How long the replaced secret or access token keeps working (README "Rotation": 0 to 7 days).
const OVERLAPS = [
  { label: "No overlap: the old one stops now", minutes: 0 },
  { label: "1 hour", minutes: 60 },
  { label: "1 day", minutes: 1440 },
  { label: "7 days", minutes: 7 * 1440 },
];
// The overlap the rotate dialog starts on: the largest allowed choice up to this one.
const PREFERRED_OVERLAP_MINUTES = 1440;

// The overlap choices the account's token policy allows (the service refuses any other): the
// presets within its longest rotation overlap, and the longest itself when no preset is it.
function allowedOverlaps(policy) {
  const longest = policy?.maxRotationOverlapMinutes ?? null;
  const choices = OVERLAPS.filter((choice) => longest === null || choice.minutes <= longest);
  if (longest !== null && !choices.some((choice) => choice.minutes === longest)) {
    choices.push({ label: minutesText(longest), minutes: longest });
    choices.sort((first, second) => first.minutes - second.minutes);
  }
  return choices;
}

const EXPIRATIONS = [
  { label: "Never", minutes: null },
  { label: "After 1 day", minutes: 1440 },
  { label: "After 7 days", minutes: 7 * 1440 },
  { label: "After 30 days", minutes: 30 * 1440 },
  { label: "After 90 days", minutes: 90 * 1440 },
  { label: "After 365 days", minutes: 365 * 1440 },
];

export async function tenantView(ctx, tenantId) {
  const [tenant, listing, roles, permissions, config, policy] = await Promise.all([
    call("GET", paths.tenant(tenantId)),
    call("GET", paths.tenantTokens(tenantId)),
    call("GET", paths.roles, { tenantId }),
    call("GET", paths.permissions),
    call("GET", paths.configuration),
    call("GET", paths.tokenPolicy, { tenantId }),
  ]);
  ctx.title(`${tenant.name} · Accounts`);
  const roleNames = new Map(roles.map((role) => [role.id, role.name]));
  const permissionKeys = new Map(permissions.map((permission) => [permission.id, permission.key]));
  const person = (userId) => {
    if (!userId) return null;
    const user = listing.users[userId];
    if (!user) return h("code", { text: userId });
    return h("span", { class: "person" }, h("span", { text: user.name || user.email }), user.name ? h("span", { class: "muted", text: user.email }) : null);
  };
  const description = (token) =>
    h(
      "div",
      { class: "run" },
      token.description ? h("span", { class: "description", text: token.description }) : h("span", { class: "muted", text: "No description" }),
      rotationState(token),
    );
  const given = (token) => {
    const names = [
      ...token.roleIds.map((id) => roleNames.get(id) ?? id),
      ...token.permissionIds.map((id) => permissionKeys.get(id) ?? id),
    ];
    return names.length ? h("span", { class: "given", text: names.join(", ") }) : h("span", { class: "muted", text: "None" });
  };
  const actions = (token) => {
    const name = token.description || token.id;
    const overlapRunning = previousSecretWorks(token);
    return h(
      "div",
      { class: "row-actions" },
      h("button", {
        type: "button",
        class: "secondary small",
        text: "Rotate",
        "aria-label": `Rotate token ${name}`,
        // A rolled access token has its successor already; a running overlap is ended first;
        // an expired token has nothing left to rotate.
        disabled: Boolean(token.replacedBy) || overlapRunning || expiresIn(token.expires) === "Expired",
        onclick: () => rotateToken(ctx, tenantId, token, policy),
      }),
      overlapRunning
        ? h("button", {
            type: "button",
            class: "secondary small",
            text: "End overlap",
            "aria-label": `End overlap of token ${name}`,
            onclick: () => endOverlap(ctx, tenantId, token),
          })
        : null,
      h("button", {
        type: "button",
        class: "danger small",
        text: "Delete",
        "aria-label": `Delete token ${name}`,
        onclick: () => deleteToken(ctx, tenantId, token),
      }),
    );
  };
  const ownerName = (userId) => {
    const user = listing.users[userId];
    return user ? user.name || user.email : userId;
  };
  // A personal token's row also ends every token of its owner.
  const personalActions = (token) => {
    const row = actions(token);
    row.append(
      h("button", {
        type: "button",
        class: "danger small",
        text: "Revoke all of owner",
        "aria-label": `Revoke every token of ${ownerName(token.userId)}`,
        onclick: () =>
          revokeEveryToken(ctx, {
            path: paths.userEveryToken(token.userId),
            tenantId,
            name: ownerName(token.userId),
            tokens: listing.tokens.filter((each) => each.userId === token.userId),
            stays: `${ownerName(token.userId)} stays a user of ${tenant.name}, and can be given new tokens.`,
          }),
      }),
    );
    return row;
  };
  const kind = (token) => KIND_NAMES[token.kind];
  const created = (token) => when(token.createdAt);
  const expires = (token) => {
    const left = expiresIn(token.expires);
    return h("span", { class: left === "Expired" ? "expired" : null, text: left });
  };
  // When it was last used (right within a minute), and from where most recently.
  const lastUsed = (token) =>
    token.lastUsedAt
      ? h(
          "span",
          { class: "person" },
          when(token.lastUsedAt),
          token.lastUsedFrom.length
            ? h("span", { class: "muted", title: token.lastUsedFrom.map((use) => use.address).join(", "), text: `from ${token.lastUsedFrom[0].address}` })
            : null,
        )
      : h("span", { class: "muted", text: "Never" });
  const activity = await activitySection(tenantId, person);
  const accountTokens = listing.tokens.filter((token) => token.userId === null);
  const personalTokens = listing.tokens.filter((token) => token.userId !== null);
  const disabled = !config.apiTokensEnabled;
  const create = h("button", {
    type: "button",
    class: "primary",
    id: "create-token",
    text: "Create token",
    disabled,
    onclick: () => createToken(ctx, tenant, roles, config.machineToMachineAuthStrategy),
  });
  return h(
    "div",
    { class: "view" },
    h("p", { class: "crumbs" }, h("a", { href: "#/accounts", text: "All accounts" })),
    h("div", { class: "title-row" }, h("div", {}, h("h1", { tabindex: "-1", text: tenant.name }), h("p", { class: "muted" }, "Account ID ", h("code", { text: tenant.tenantId }))), create),
    disabled
      ? h("p", { class: "notice warning", text: "API tokens are off (M2M settings): every token below fails validation, and no token can be created." })
      : null,
    h(
      "section",
      { "aria-labelledby": "account-tokens-title" },
      h("h2", { id: "account-tokens-title", tabindex: "-1", text: `Account tokens (${accountTokens.length})` }),
      table(
        "Account tokens",
        [
          { label: "Kind", cell: kind },
          { label: "Description", cell: description },
          { label: "Created by", cell: (token) => person(token.createdByUserId) ?? h("span", { class: "muted", text: "Vendor" }) },
          { label: "Created", cell: created },
          { label: "Expires in", cell: expires },
          { label: "Last used", cell: lastUsed },
          { label: "Roles", cell: given },
          { label: "Actions", cell: actions, class: "actions-cell" },
        ],
        accountTokens,
        { empty: "This account has no account tokens." },
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "personal-tokens-title" },
      h("h2", { id: "personal-tokens-title", tabindex: "-1", text: `Personal tokens (${personalTokens.length})` }),
      table(
        "Personal tokens",
        [
          { label: "Kind", cell: kind },
          { label: "Description", cell: description },
          { label: "Owner", cell: (token) => person(token.userId) },
          { label: "Created by", cell: (token) => person(token.createdByUserId) ?? h("span", { class: "muted", text: "Vendor" }) },
          { label: "Created", cell: created },
          { label: "Expires in", cell: expires },
          { label: "Last used", cell: lastUsed },
          { label: "Roles", cell: () => h("span", { class: "muted", text: "Its owner's" }) },
          { label: "Actions", cell: personalActions, class: "actions-cell" },
        ],
        personalTokens,
        { empty: "No user of this account has a personal token." },
      ),
    ),
    policySection(ctx, tenant, policy, listing),
    h(
      "section",
      { "aria-labelledby": "revoke-all-title", class: "card danger-zone" },
      h("h2", { id: "revoke-all-title", tabindex: "-1", text: "Revoke every token" }),
      h(
        "p",
        {},
        "If this account's secrets may have leaked, end every token in it at once: its own and its users' personal tokens, " +
          "access tokens and client credentials with their refresh tokens. The account and its users stay.",
      ),
      h("button", {
        type: "button",
        class: "danger",
        text: "Revoke every token of this account",
        onclick: () =>
          revokeEveryToken(ctx, {
            path: paths.tenantEveryToken(tenantId),
            tenantId: null,
            name: tenant.name,
            tokens: listing.tokens,
            stays: `${tenant.name} and its users stay; new tokens can be made from now on.`,
          }),
      }),
    ),
    activity,
  );
}

// --- rotation ----------------------------------------------------------------------------------

function previousSecretWorks(token, now = Date.now()) {
  return Boolean(token.previousSecretExpires) && Date.parse(token.previousSecretExpires) > now;
}

/** Where a token stands in a rotation, or null if it was never rotated. */
function rotationState(token) {
  if (token.replacedBy) {
    return h("span", { class: "rotation" }, "Rolled over: works until ", when(token.expires), " (then deleted)");
  }
  if (!token.rotatedAt) return null;
  if (previousSecretWorks(token)) {
    const used = token.previousSecretLastUsedAt
      ? h("span", {}, " · last used ", when(token.previousSecretLastUsedAt))
      : " · not used since the rotation";
    return h("span", { class: "rotation" }, "Previous secret works until ", when(token.previousSecretExpires), used);
  }
  return h("span", { class: "rotation muted" }, "Secret rotated ", when(token.rotatedAt));
}

function rotateToken(ctx, tenantId, token, policy) {
  const accessToken = ACCESS_TOKEN_KINDS.has(token.kind);
  let rotated = false;
  return openDialog(ctx.root, {
    title: accessToken ? "Roll this access token" : "Rotate this secret",
    build: (dialog, close) => {
      const content = h("div", {});
      const error = h("p", { class: "field-error", role: "alert" });
      const choices = allowedOverlaps(policy);
      const preferred = choices.filter((choice) => choice.minutes <= PREFERRED_OVERLAP_MINUTES).at(-1) ?? choices[0];
      const overlap = h(
        "select",
        { id: "rotation-overlap", name: "overlap" },
        choices.map((choice, index) => h("option", { value: String(index), text: choice.label, selected: choice === preferred })),
      );
      const submit = h("button", { type: "submit", class: "primary", text: accessToken ? "Roll token" : "Rotate secret" });
      const form = h(
        "form",
        {
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            error.textContent = "";
            const choice = choices[Number(overlap.value)];
            submit.disabled = true;
            let answer;
            try {
              answer = await call("POST", `${DELETE_PATHS[token.kind]}${encodeURIComponent(token.id)}/rotate`, {
                body: { overlapMinutes: choice.minutes },
                tenantId,
                userId: token.userId ?? undefined,
              });
            } catch (failure) {
              submit.disabled = false;
              if (!(failure instanceof ApiError)) throw failure;
              error.textContent = `Nothing was rotated: ${failure.message}`;
              return;
            }
            rotated = true;
            const strategy = accessToken ? "AccessToken" : "ClientCredentials";
            const until =
              choice.minutes === 0
                ? h("p", { text: accessToken ? "The old access token no longer works." : "The previous secret no longer works." })
                : h(
                    "p",
                    {},
                    accessToken ? "The old access token works until " : "The previous secret works until ",
                    when(accessToken ? new Date(Date.now() + choice.minutes * 60_000).toISOString() : answer.previousSecretExpires),
                    ".",
                  );
            content.replaceChildren(h("div", {}, until, secretPanel(answer, strategy, () => close(true))));
            content.querySelector("textarea")?.focus();
          },
        },
        h(
          "p",
          {},
          accessToken
            ? "A new access token with the same description, roles and expiry. The old one keeps working for the overlap you choose, then is deleted."
            : "A new secret for the same client ID. The previous secret keeps working for the overlap you choose, so machines can move one at a time.",
        ),
        h("div", { class: "field" }, h("label", { for: "rotation-overlap", text: "Old one keeps working for" }), overlap),
        error,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => close(false) }), submit),
      );
      content.append(form);
      return content;
    },
  }).then(() => {
    if (rotated) ctx.reload(token.userId ? "#personal-tokens-title" : "#account-tokens-title");
  });
}

async function endOverlap(ctx, tenantId, token) {
  const name = token.description ? `“${token.description}”` : `Token ${token.id}`;
  const confirmed = await confirmDialog(ctx.root, {
    title: "End the overlap now?",
    paragraphs: [
      `The previous secret of ${name} stops working at once; only the new secret exchanges from now on.`,
      token.previousSecretLastUsedAt ? "It was used since the rotation: make sure every machine has moved." : "It has not been used since the rotation.",
    ],
    confirm: "End overlap",
  });
  if (!confirmed) return;
  try {
    await call("DELETE", `${DELETE_PATHS[token.kind]}${encodeURIComponent(token.id)}/rotation`, {
      tenantId,
      userId: token.userId ?? undefined,
    });
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(`The overlap was not ended: ${failure.message}`);
    await ctx.reload();
    return;
  }
  ctx.announce(`The previous secret of ${name} no longer works.`);
  await ctx.reload(token.userId ? "#personal-tokens-title" : "#account-tokens-title");
}

async function deleteToken(ctx, tenantId, token) {
  const name = token.description ? `“${token.description}”` : `Token ${token.id}`;
  const confirmed = await confirmDialog(ctx.root, {
    title: "Delete this token?",
    paragraphs: [
      `${name} (${KIND_NAMES[token.kind].toLowerCase()}) stops working at once, and cannot be restored.`,
      "Whatever uses it needs a new token.",
    ],
    confirm: "Delete token",
  });
  if (!confirmed) return;
  try {
    await call("DELETE", DELETE_PATHS[token.kind] + encodeURIComponent(token.id), {
      tenantId,
      userId: token.userId ?? undefined,
    });
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(`The token was not deleted: ${failure.message}`);
    await ctx.reload();
    return;
  }
  ctx.announce(`${name} deleted.`);
  await ctx.reload(token.userId ? "#personal-tokens-title" : "#account-tokens-title");
}

// --- creating an account token ------------------------------------------------------------------

function createToken(ctx, tenant, roles, strategy) {
  let created = false;
  return openDialog(ctx.root, {
    title: "Create an account token",
    build: (dialog, close) => {
      const content = h("div", {});
      content.append(
        creationForm({
          tenant,
          roles,
          strategy,
          cancel: () => close(false),
          done: (secretPanel) => {
            created = true;
            content.replaceChildren(secretPanel(() => close(true)));
            content.querySelector("button")?.focus();
          },
        }),
      );
      return content;
    },
  }).then(() => {
    if (created) ctx.reload("#create-token");
  });
}

function creationForm({ tenant, roles, strategy, cancel, done }) {
  const error = h("p", { class: "field-error", role: "alert" });
  const description = h("input", { id: "token-description", name: "description", maxlength: 1024, autocomplete: "off" });
  const expiration = h(
    "select",
    { id: "token-expiration", name: "expiration" },
    EXPIRATIONS.map((choice, index) => h("option", { value: String(index), text: choice.label })),
  );
  const roleChoices = roles.map((role) =>
    h(
      "label",
      { class: "choice" },
      h("input", { type: "checkbox", name: "role", value: role.id }),
      h("span", {}, h("span", { text: role.name }), h("span", { class: "muted", text: role.tenantId ? " (this account)" : " (every account)" })),
    ),
  );
  const submit = h("button", { type: "submit", class: "primary", text: "Create token" });
  const form = h(
    "form",
    {
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        const choice = EXPIRATIONS[Number(expiration.value)];
        const body = {
          description: description.value.trim() || null,
          roleIds: [...form.querySelectorAll("input[name=role]:checked")].map((box) => box.value),
        };
        if (choice.minutes !== null) body.expiresInMinutes = choice.minutes;
        if (strategy === "ClientCredentials" && body.roleIds.length === 0) {
          error.textContent = "Choose at least one role: client credentials act with the roles they are given.";
          form.querySelector("input[name=role]")?.focus();
          return;
        }
        const path =
          strategy === "AccessToken"
            ? "/identity/resources/tenants/access-tokens/v1"
            : "/identity/resources/tenants/api-tokens/v2";
        submit.disabled = true;
        let answer;
        try {
          answer = await call("POST", path, { body, tenantId: tenant.tenantId });
        } catch (failure) {
          submit.disabled = false;
          if (!(failure instanceof ApiError)) throw failure;
          error.textContent = `The token was not created: ${failure.message}`;
          return;
        }
        done((finish) => secretPanel(answer, strategy, finish));
      },
    },
    h("p", {}, "Kind: ", h("strong", { text: KIND_LABELS[strategy] }), h("span", { class: "muted", text: " — the environment's token kind (M2M settings)." })),
    h("div", { class: "field" }, h("label", { for: "token-description", text: "Description" }), description),
    h(
      "fieldset",
      {},
      h("legend", { text: "Roles" }),
      roleChoices.length ? h("div", { class: "choices" }, roleChoices) : h("p", { class: "muted", text: "No role exists for this account yet (see Roles)." }),
    ),
    h("div", { class: "field" }, h("label", { for: "token-expiration", text: "Expiration" }), expiration),
    error,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "secondary", text: "Cancel", onclick: cancel }),
      submit,
    ),
  );
  return form;
}

/** The secret, shown this once; the dialog that holds it leaves the DOM when it closes. */
function secretPanel(answer, strategy, finish) {
  const status = h("p", { class: "saved", role: "status" });
  const fields =
    strategy === "AccessToken"
      ? [["Access token", answer.secret, 6]]
      : [
          ["Client ID", answer.clientId, 1],
          ["Secret", answer.secret, 2],
        ];
  return h(
    "div",
    { class: "secret-panel" },
    h(
      "p",
      { class: "notice warning" },
      h("strong", { text: "Copy it now. " }),
      "This is the only time the service shows it: it keeps no copy it could show again.",
    ),
    fields.map(([label, value, rows]) => {
      const id = uid("secret");
      const box = h("textarea", { id, readonly: true, rows, spellcheck: "false", class: "secret", value });
      return h(
        "div",
        { class: "field" },
        h("label", { for: id, text: label }),
        box,
        h("button", {
          type: "button",
          class: "secondary small",
          text: `Copy ${label.charAt(0).toLowerCase()}${label.slice(1)}`,
          onclick: async () => {
            status.textContent = (await copy(box)) ? `${label} copied.` : `Select the ${label.toLowerCase()} and copy it.`;
          },
        }),
      );
    }),
    status,
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", text: "Done", onclick: finish })),
  );
}

async function copy(box) {
  try {
    await navigator.clipboard.writeText(box.value);
    return true;
  } catch {
    // No clipboard API (a page served over plain HTTP from another host): the selection's copy.
    box.focus();
    box.select();
    return document.execCommand("copy");
  }
}

// --- revoking every token of an account or of a user ----------------------------------------------

async function revokeEveryToken(ctx, { path, tenantId, name, tokens, stays }) {
  const live = tokens.filter((token) => expiresIn(token.expires) !== "Expired");
  const accessTokens = live.filter((token) => token.kind.endsWith("AccessToken")).length;
  const credentials = live.length - accessTokens;
  const confirmed = await confirmDialog(ctx.root, {
    title: `Revoke every token of ${name}?`,
    paragraphs: [
      `${plural(accessTokens, "access token")} and ${plural(credentials, "client credential")} ` +
        "(with every refresh token and JWT issued from them) stop working at once, on every server, and cannot be restored.",
      "Every machine that uses them needs a new token.",
      stays,
    ],
    confirm: "Revoke every token",
  });
  if (!confirmed) return;
  let answer;
  try {
    answer = await call("DELETE", path, { tenantId: tenantId ?? undefined });
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    ctx.announce(`Nothing was revoked: ${failure.message}`);
    await ctx.reload();
    return;
  }
  ctx.announce(
    `${name}: revoked ${plural(answer.accessTokens, "access token")} and ${plural(answer.clientCredentials, "client credential")}.`,
  );
  await ctx.reload("#revoke-all-title");
}

// --- the account's token policy -------------------------------------------------------------------

const POLICY_KINDS = [
  ["tenantApiToken", "Account client credentials"],
  ["tenantAccessToken", "Account access tokens"],
  ["userApiToken", "Client credentials per user"],
  ["userAccessToken", "Access tokens per user"],
];
const NO_LIMIT = "No limit";

function minutesText(minutes) {
  if (minutes === null) return NO_LIMIT;
  if (minutes % 1440 === 0) return plural(minutes / 1440, "day");
  if (minutes % 60 === 0) return plural(minutes / 60, "hour");
  return plural(minutes, "minute");
}

function policySection(ctx, tenant, policy, listing) {
  const facts = [
    ["Longest expiration", minutesText(policy.maxExpiresInMinutes)],
    ["Tokens must expire", policy.requireExpiration || policy.maxExpiresInMinutes !== null ? "Yes" : "No"],
    ["Longest rotation overlap", policy.maxRotationOverlapMinutes === null ? "7 days (the service's bound)" : minutesText(policy.maxRotationOverlapMinutes)],
    ...POLICY_KINDS.map(([kind, label]) => [`Most ${label.charAt(0).toLowerCase()}${label.slice(1)}`, policy.maxTokens[kind] ?? NO_LIMIT]),
  ];
  return h(
    "section",
    { "aria-labelledby": "policy-title", class: "card" },
    h(
      "div",
      { class: "title-row" },
      h("h2", { id: "policy-title", tabindex: "-1", text: "Token policy" }),
      h("button", { type: "button", class: "secondary", id: "edit-policy", text: "Edit policy", onclick: () => editPolicy(ctx, tenant, policy, listing) }),
    ),
    h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", { text: term }), h("dd", { text: String(value) })])),
    h("p", { class: "muted", text: policy.updatedAt ? `Last changed ${new Date(policy.updatedAt).toLocaleString("en")}.` : "No policy set: only the service's own bounds apply." }),
  );
}

const EXPIRATION_LIMITS = [null, 1440, 7 * 1440, 30 * 1440, 90 * 1440, 365 * 1440];

function editPolicy(ctx, tenant, policy, listing) {
  let saved = false;
  return openDialog(ctx.root, {
    title: "Edit the token policy",
    build: (dialog, close) => {
      const content = h("div", {});
      const error = h("p", { class: "field-error", role: "alert" });
      const choices = EXPIRATION_LIMITS.includes(policy.maxExpiresInMinutes) ? EXPIRATION_LIMITS : [...EXPIRATION_LIMITS, policy.maxExpiresInMinutes];
      const longest = h(
        "select",
        { id: "policy-longest", name: "maxExpiresInMinutes" },
        choices.map((minutes) => h("option", { value: minutes === null ? "" : String(minutes), text: minutesText(minutes), selected: minutes === policy.maxExpiresInMinutes })),
      );
      const required = h("input", { type: "checkbox", id: "policy-required", name: "requireExpiration", checked: policy.requireExpiration });
      const overlap = h("input", { type: "number", id: "policy-overlap", name: "maxRotationOverlapMinutes", min: 0, max: 10080, inputmode: "numeric", value: policy.maxRotationOverlapMinutes ?? "" });
      const most = POLICY_KINDS.map(([kind, label]) => {
        const id = uid("policy-most");
        const input = h("input", { type: "number", id, name: kind, min: 0, inputmode: "numeric", value: policy.maxTokens[kind] ?? "" });
        return { kind, input, field: h("div", { class: "field" }, h("label", { for: id, text: `Most ${label.charAt(0).toLowerCase()}${label.slice(1)}` }), input) };
      });
      const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
      const submit = h("button", { type: "submit", class: "primary", text: "Save policy" });
      const form = h(
        "form",
        {
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            error.textContent = "";
            const body = {
              maxExpiresInMinutes: longest.value === "" ? null : Number(longest.value),
              requireExpiration: required.checked,
              maxRotationOverlapMinutes: number(overlap),
              maxTokens: Object.fromEntries(most.map(({ kind, input }) => [kind, number(input)])),
            };
            submit.disabled = true;
            let answer;
            try {
              answer = await call("PUT", paths.tokenPolicy, { body, tenantId: tenant.tenantId });
            } catch (failure) {
              submit.disabled = false;
              if (!(failure instanceof ApiError)) throw failure;
              error.textContent = `The policy was not saved: ${failure.message}`;
              return;
            }
            saved = true;
            if (answer.exceeding.length === 0) {
              close(true);
              return;
            }
            content.replaceChildren(exceedingPanel(answer, listing, () => close(true)));
            content.querySelector("button")?.focus();
          },
        },
        h("p", { class: "muted", text: "Leave a limit empty for none. Existing tokens are never shortened: the service lists those outside the new policy." }),
        h("div", { class: "field" }, h("label", { for: "policy-longest", text: "Longest expiration" }), longest),
        h("label", { class: "choice" }, required, h("span", { text: "Tokens must expire" })),
        h("div", { class: "field" }, h("label", { for: "policy-overlap", text: "Longest rotation overlap (minutes)" }), overlap),
        most.map(({ field }) => field),
        error,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => close(false) }), submit),
      );
      content.append(form);
      return content;
    },
  }).then(() => {
    if (!saved) return;
    ctx.announce("Token policy saved.");
    ctx.reload("#policy-title");
  });
}

const RULE_TEXTS = {
  maxExpiresInMinutes: "expires later than the longest expiration allows, or never",
  requireExpiration: "never expires",
};

/** What the saved policy found outside it, by token (its description) and by owner (name). */
function exceedingPanel(answer, listing, finish) {
  const kindName = (kind) => POLICY_KINDS.find(([name]) => name === kind)?.[1] ?? kind;
  const owner = (userId) => {
    const user = userId ? listing.users[userId] : null;
    return user ? user.name || user.email : userId ? `User ${userId}` : "The account";
  };
  const tokenName = (tokenId) => {
    const token = listing.tokens.find((each) => each.id === tokenId);
    return token?.description ? `“${token.description}”` : `Token ${tokenId}`;
  };
  const items = answer.exceeding.map((item) =>
    item.tokenId
      ? h("li", { text: `${tokenName(item.tokenId)} (${KIND_NAMES[item.kind].toLowerCase()}${item.userId ? ` of ${owner(item.userId)}` : ""}) ${RULE_TEXTS[item.rule] ?? item.rule}.` })
      : h("li", { text: `${owner(item.userId)} holds ${item.count}: ${kindName(item.kind).toLowerCase()} are limited to ${answer.maxTokens[item.kind]}.` }),
  );
  const count = answer.exceeding.length;
  return h(
    "div",
    {},
    h("p", { class: "notice warning", role: "status", text: `Saved. ${count === 1 ? "One finding" : `${count} findings`} below lie outside the new policy; those tokens keep working as they are.` }),
    h("ul", { class: "exceeding" }, items),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", text: "Done", onclick: finish })),
  );
}
