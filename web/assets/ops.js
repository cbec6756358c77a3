// The ops console: per-SKU stock (Redis counters next to SQL, with drift) and the settlement
// lag from the settlement's reconcile report, the gateway's counters turned into per-second
// rates, and the rate-limit rules in force. Actions: open or pause a sale, restock.
//
// Two operators never overwrite each other: a sale change PUTs the product as this console
// showed it with `If-Match` of the version shown, so a product someone changed since answers
// 412 and the console reloads and says so; a restock is a relative change (`POST …/restock`)
// that adds to whatever the stock is when it runs.

import { el, get, notify, request, setUpSignIn } from "/assets/api.js";

const POLL_MS = 2000;
const catalog = new Map(); // sku → product view, with the version a change must match
let previous = null; // the last edge reading, for rates

setUpSignIn("ops", () => {
  document.getElementById("console").hidden = false;
  refresh();
  setInterval(refresh, POLL_MS);
});

async function refresh() {
  try {
    const [edge, report, products] = await Promise.all([
      get("/api/v1/admin/edge"),
      get("/api/v1/admin/reconcile"),
      get("/api/v1/products"),
    ]);
    for (const product of products) catalog.set(product.sku, product);
    showRates(edge);
    showLag(report.outbox);
    showStock(report);
    showRules(edge.ratelimit);
  } catch (error) {
    if (error.status === 403) notify("This console needs a token with the ops role.", "error");
    else notify(`Could not refresh: ${error.message}`, "error");
  }
}

// --- rates and lag ------------------------------------------------------------------------

const sum = (counts, names) => names.reduce((total, name) => total + (counts[name] || 0), 0);

function showRates(edge) {
  const now = { at: Date.parse(edge.generated_at), counters: edge.counters };
  if (previous && now.at > previous.at) {
    const seconds = (now.at - previous.at) / 1000;
    const rate = (pick) => ((pick(now.counters) - pick(previous.counters)) / seconds).toFixed(1);
    text("rate-reservations", rate((c) => sum(c.reservations, ["created"])));
    text("rate-429", rate((c) => c.responses_429));
    text("rate-confirms", rate((c) => sum(c.confirms, ["created"])));
  }
  previous = now;
  text("redis-state", edge.redis_degraded ? "DOWN (degraded)" : "up");
}

/** The settlement lag: how far the outbox relay (SQL → Redis stream) is behind. */
function showLag(outbox) {
  text("settlement-lag", `${outbox.lag_seconds.toFixed(1)} s`);
  text("settlement-pending", `${outbox.pending} events not yet relayed`);
}

const text = (id, value) => (document.getElementById(id).textContent = value);

// --- stock, drift and the sale actions ----------------------------------------------------

function showStock(report) {
  text("reconciled-at", `reconciled ${new Date(report.generated_at).toLocaleTimeString()}`);
  const rows = report.skus.map((line) => {
    const store = line.store;
    const product = catalog.get(line.sku);
    const state = product?.sale_state ?? store?.sale_state ?? "unknown";
    const drift = line.ok ? "ok" : `drift (sold ${line.sold_drift >= 0 ? "+" : ""}${line.sold_drift}${line.balanced ? "" : ", unbalanced"})`;
    return el("tr", { "data-sku": line.sku, "data-state": state },
      el("td", { class: "mono" }, line.sku),
      el("td", {}, product?.name ?? ""),
      el("td", { "data-role": "sale" }, state === "on_sale" ? "open" : state),
      el("td", { "data-role": "available" }, store?.available ?? "–"),
      el("td", { "data-role": "held" }, store ? store.held + store.confirming : "–"),
      el("td", { "data-role": "sold" }, store?.sold ?? "–"),
      el("td", {}, `${line.sql_sold} / ${line.sql_total_stock}`),
      el("td", { class: line.ok ? "good" : "bad" }, drift),
      el("td", {}, product ? el("div", { class: "actions" }, actions(product)) : ""),
    );
  });
  document.querySelector("#skus tbody").replaceChildren(...rows);
}

function actions(product) {
  const open = product.sale_state === "on_sale";
  const amount = el("input", { type: "number", min: 1, value: 10, "aria-label": `units to add to ${product.sku}`, "data-role": "restock-amount" });
  return [
    el("button", { type: "button", "data-role": "toggle-sale", class: open ? "danger" : "",
      onclick: () => change(product, { sale_state: open ? "paused" : "on_sale" }, open ? "paused" : "opened") },
      open ? "Pause sale" : "Open sale"),
    amount,
    el("button", { type: "button", class: "secondary", "data-role": "restock",
      onclick: () => {
        const units = Number.parseInt(amount.value, 10);
        if (!(units > 0)) return notify("Restock needs a whole number of units above 0.", "error");
        restock(product, units);
      } }, "Restock"),
  ];
}

const productPath = (sku) => `/api/v1/admin/products/${encodeURIComponent(sku)}`;

/**
 * PUTs `shown` (the product as this console showed it) with `patch` applied, if it is still
 * at the version shown. A 412 means another operator changed it since: nothing was changed,
 * the console reloads, and the operator decides again on what is there now.
 */
async function change(shown, patch, done) {
  const body = {
    name: shown.name,
    price_cents: shown.price_cents,
    total_stock: shown.total_stock,
    per_buyer_limit: shown.per_buyer_limit,
    max_per_order: shown.max_per_order,
    sale_state: shown.sale_state,
    ...patch,
  };
  try {
    const { body: updated } = await request("PUT", productPath(shown.sku), body, {
      headers: { "If-Match": `"${shown.version}"` },
    });
    catalog.set(shown.sku, updated);
    notify(`${shown.name} ${done}.`, "ok");
  } catch (error) {
    if (error.status === 412) {
      notify(`${shown.name} was changed by someone else meanwhile, so nothing was changed: the console reloaded it. Check it and try again.`, "error");
    } else {
      notify(`Could not change ${shown.sku}: ${error.message}`, "error");
    }
  }
  refresh();
}

/**
 * Adds `units` to the stock as it is when the restock runs (a concurrent restock is never
 * lost). Sent once: the server does not dedupe restocks, so a retry after a lost answer could
 * add the units twice.
 */
async function restock(shown, units) {
  try {
    const { body: updated } = await request("POST", `${productPath(shown.sku)}/restock`, { units }, { once: true });
    catalog.set(shown.sku, updated);
    notify(`${shown.name} restocked with ${units} units (${updated.total_stock} in total).`, "ok");
  } catch (error) {
    notify(`Could not restock ${shown.sku}: ${error.message}. Check the stock before trying again.`, "error");
  }
  refresh();
}

// --- rate limits --------------------------------------------------------------------------

function showRules(ratelimit) {
  text("rules-file", ratelimit.file ? `from ${ratelimit.file}` : "no rules file configured");
  const load = ratelimit.last_load;
  const line = document.getElementById("last-reload");
  line.className = load && !load.ok ? "bad" : "";
  line.textContent = !load
    ? "No rules loaded."
    : load.ok
      ? `Last reload ${new Date(load.at).toLocaleTimeString()}: ok, ${load.rules} rules in force.`
      : `Last reload ${new Date(load.at).toLocaleTimeString()} REFUSED: ${load.error} (the ${load.rules} last good rules stay).`;
  const rows = ratelimit.rules.map((rule) => {
    const d = rule.decisions;
    return el("tr", { "data-rule": rule.name },
      el("td", { class: "mono" }, rule.name),
      el("td", { class: "mono" }, `${rule.method ?? "any"} ${rule.path}`),
      el("td", {}, rule.key.join(" + ")),
      el("td", {}, `${rule.rate} / ${rule.period_secs} s`),
      el("td", {}, rule.burst),
      el("td", {}, (rule.shadow ? "shadow" : "enforced") + (rule.phase && rule.phase !== "after_auth" ? `, ${rule.phase}` : "")),
      el("td", {}, d.allowed ?? 0),
      el("td", {}, (d.limited ?? 0) + (d.limited_local ?? 0) + (d.shadow_limited ?? 0)),
    );
  });
  document.querySelector("#rules tbody").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No rate limits in force."))]),
  );
}
