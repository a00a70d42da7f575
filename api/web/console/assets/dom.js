// Building the page from data: every string becomes a text node or an attribute value, never
// markup, so a tenant named "<script>" is shown as those characters.

/**
 * An element with its properties and children.
 * props: `text` (textContent), `class`, `on<event>` (a listener), `value`/`checked`/`disabled`
 * (properties), anything else an attribute (true: present, null/false: absent).
 * children: elements or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") element.textContent = String(value);
    else if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (["value", "checked", "disabled", "selected"].includes(name)) element[name] = value;
    else if (name === "style" || name === "innerHTML") throw new Error(`${name} is not allowed`);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let nextId = 0;

/** A document-unique id, for label/aria-describedby pairs. */
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/**
 * A table with explicit ARIA roles, so that it stays a table for assistive technology when a
 * phone's width lays its rows out as cards (each cell then shows its column's name).
 * columns: [{label, cell: (row) => string | Node}]
 */
export function table(caption, columns, rows, { empty = "Nothing here yet." } = {}) {
  if (rows.length === 0) return h("p", { class: "empty", text: empty });
  const head = h(
    "thead",
    { role: "rowgroup" },
    h("tr", { role: "row" }, columns.map((c) => h("th", { scope: "col", role: "columnheader", class: c.class, text: c.label }))),
  );
  const body = h(
    "tbody",
    { role: "rowgroup" },
    rows.map((row) =>
      h(
        "tr",
        { role: "row" },
        columns.map((c) => h("td", { role: "cell", "data-label": c.label, class: c.class }, c.cell(row))),
      ),
    ),
  );
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { role: "table" }, h("caption", { class: "visually-hidden", text: caption }), head, body),
  );
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const TIME_PARTS = new Set(["hour", "minute", "second", "dayPeriod", "timeZoneName"]);

/**
 * A date and time in the reader's locale, with the exact instant for machines. The date and the
 * time are each kept on one line: a narrow column breaks between them, never inside either.
 */
export function when(iso) {
  if (!iso) return "—";
  const parts = DATE_TIME.formatToParts(new Date(iso));
  const isTime = (part) => TIME_PARTS.has(part.type);
  // The first field of the other half (the time, in most locales); the literal before it joins them.
  const second = parts.findIndex((part) => part.type !== "literal" && isTime(part) !== isTime(parts[0]));
  const text = (from, to) => parts.slice(from, to).map((part) => part.value).join("");
  if (second < 2 || parts[second - 1].type !== "literal") {
    return h("time", { datetime: iso, title: iso }, h("span", { text: text(0) }));
  }
  const joint = parts[second - 1].value;
  const glue = joint.trimEnd();
  return h(
    "time",
    { datetime: iso, title: iso },
    h("span", { text: text(0, second - 1) + glue }),
    joint.slice(glue.length) || " ",
    h("span", { text: text(second) }),
  );
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * The time left before `iso`, rounded to the largest unit: "Never", "7 days", "23 hours",
 * "5 minutes", "Expired". A token made a moment ago to last a day reads "1 day", not "23 hours".
 */
export function expiresIn(iso, now = Date.now()) {
  if (!iso) return "Never";
  const left = new Date(iso).getTime() - now;
  if (left <= 0) return "Expired";
  if (left >= DAY - MINUTE) return plural(Math.round(left / DAY), "day");
  if (left >= HOUR - MINUTE) return plural(Math.min(23, Math.round(left / HOUR)), "hour");
  return plural(Math.max(1, Math.min(59, Math.round(left / MINUTE))), "minute");
}

export function plural(count, unit) {
  return `${count.toLocaleString("en")} ${unit}${count === 1 ? "" : "s"}`;
}

/** "2,592,000 seconds (30 days)": a number of seconds for a person. */
export function seconds(value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) return "";
  const units = [
    [86_400, "day"],
    [3_600, "hour"],
    [60, "minute"],
  ];
  for (const [size, unit] of units) {
    if (n >= size && n % size === 0) return plural(n / size, unit);
  }
  return plural(n, "second");
}
