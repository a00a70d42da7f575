// Roles: every role with its permissions; create a role; grant or take away permissions, the
// fe.secure.* ones that decide what end users may do with API tokens included.

import { ApiError, call, paths } from "./api.js";
import { openDialog } from "./dialogs.js";
import { h, table } from "./dom.js";

export async function rolesView(ctx) {
  ctx.title("Roles");
  const [roles, permissions] = await Promise.all([call("GET", paths.roles), call("GET", paths.permissions)]);
  const keys = new Map(permissions.map((permission) => [permission.id, permission.key]));
  const create = h("button", {
    type: "button",
    class: "primary",
    id: "create-role",
    text: "Create role",
    onclick: () => createRole(ctx),
  });
  return h(
    "div",
    { class: "view" },
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1", text: "Roles" }), create),
    h(
      "p",
      { class: "muted" },
      "A role's permissions reach the users and account tokens that hold it. The ",
      h("code", { text: "fe.secure.*" }),
      " permissions decide what end users may read, create and delete among API tokens.",
    ),
    table(
      "Roles",
      [
        { label: "Name", cell: (role) => h("strong", { text: role.name }) },
        { label: "Key", cell: (role) => h("code", { text: role.key }) },
        { label: "Applies to", cell: (role) => (role.tenantId ? h("span", {}, "Account ", h("code", { text: role.tenantId })) : "Every account") },
        {
          label: "Permissions",
          cell: (role) =>
            role.permissions.length
              ? h("ul", { class: "tags" }, role.permissions.map((id) => h("li", {}, h("code", { text: keys.get(id) ?? id }))))
              : h("span", { class: "muted", text: "None" }),
        },
        {
          label: "Actions",
          class: "actions-cell",
          cell: (role) =>
            h("button", {
              type: "button",
              class: "secondary small",
              text: "Edit permissions",
              "aria-label": `Edit permissions of ${role.name}`,
              onclick: () => editPermissions(ctx, role, permissions),
            }),
        },
      ],
      roles,
      { empty: "No roles yet." },
    ),
  );
}

function editPermissions(ctx, role, permissions) {
  const held = new Set(role.permissions);
  const group = (legend, items) =>
    h(
      "fieldset",
      {},
      h("legend", { text: legend }),
      items.length
        ? h(
            "div",
            { class: "choices" },
            items.map((permission) =>
              h(
                "label",
                { class: "choice" },
                h("input", { type: "checkbox", name: "permission", value: permission.id, checked: held.has(permission.id) }),
                h("span", {}, h("code", { text: permission.key }), permission.name !== permission.key ? h("span", { class: "muted", text: ` ${permission.name}` }) : null),
              ),
            ),
          )
        : h("p", { class: "muted", text: "None exist." }),
    );
  let saved = false;
  return openDialog(ctx.root, {
    title: `Permissions of ${role.name}`,
    build: (dialog, close) => {
      const error = h("p", { class: "field-error", role: "alert" });
      const save = h("button", { type: "submit", class: "primary", text: "Save permissions" });
      const form = h(
        "form",
        {
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            const permissionIds = [...form.querySelectorAll("input[name=permission]:checked")].map((box) => box.value);
            save.disabled = true;
            try {
              await call("PUT", paths.rolePermissions(role.id), { body: { permissionIds }, tenantId: role.tenantId ?? undefined });
            } catch (failure) {
              save.disabled = false;
              if (!(failure instanceof ApiError)) throw failure;
              error.textContent = `Not saved: ${failure.message}`;
              return;
            }
            saved = true;
            close(true);
          },
        },
        group("API token permissions", permissions.filter((permission) => permission.fePermission)),
        group("Other permissions", permissions.filter((permission) => !permission.fePermission)),
        error,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => close(false) }), save),
      );
      return form;
    },
  }).then(() => {
    if (!saved) return;
    ctx.announce(`The permissions of ${role.name} are saved.`);
    ctx.reload("#create-role");
  });
}

function slug(text) {
  return text
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

function createRole(ctx) {
  let created = null;
  return openDialog(ctx.root, {
    title: "Create a role",
    build: (dialog, close) => {
      const error = h("p", { class: "field-error", role: "alert" });
      const name = h("input", { id: "role-name", required: true, maxlength: 255, autocomplete: "off" });
      const key = h("input", { id: "role-key", required: true, maxlength: 255, autocomplete: "off", spellcheck: "false", "aria-describedby": "role-key-hint" });
      const account = h("input", { id: "role-account", maxlength: 255, autocomplete: "off", spellcheck: "false", "aria-describedby": "role-account-hint" });
      let keyEdited = false;
      name.addEventListener("input", () => {
        if (!keyEdited) key.value = slug(name.value);
      });
      key.addEventListener("input", () => {
        keyEdited = true;
      });
      const submit = h("button", { type: "submit", class: "primary", text: "Create role" });
      return h(
        "form",
        {
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            error.textContent = "";
            if (!name.value.trim() || !key.value.trim()) {
              error.textContent = "A role needs a name and a key.";
              (name.value.trim() ? key : name).focus();
              return;
            }
            const tenantId = account.value.trim() || undefined;
            submit.disabled = true;
            try {
              // Frontegg's role level is stored and echoed; it steers nothing in this service.
              const body = [{ name: name.value.trim(), key: key.value.trim(), level: 1 }];
              [created] = await call("POST", paths.roles, { body, tenantId });
            } catch (failure) {
              submit.disabled = false;
              if (!(failure instanceof ApiError)) throw failure;
              error.textContent = `The role was not created: ${failure.message}`;
              return;
            }
            close(true);
          },
        },
        h("div", { class: "field" }, h("label", { for: "role-name", text: "Name" }), name),
        h("div", { class: "field" }, h("label", { for: "role-key", text: "Key" }), key, h("p", { id: "role-key-hint", class: "hint", text: "What tokens and JWTs carry in their roles, e.g. billing-admin." })),
        h(
          "div",
          { class: "field" },
          h("label", { for: "role-account", text: "Account ID (optional)" }),
          account,
          h("p", { id: "role-account-hint", class: "hint", text: "Empty: a role of every account. An account ID: a role of that account only." }),
        ),
        error,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => close(false) }), submit),
      );
    },
  }).then(() => {
    if (!created) return;
    ctx.announce(`Role ${created.name} created. Give it permissions with Edit permissions.`);
    ctx.reload("#create-role");
  });
}
