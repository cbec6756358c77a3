// The storefront: products with live availability, reserve → hold with a countdown →
// confirm, and "my orders" with cancel. Every call goes through api.js (idempotency keys and
// retries live there); this module turns outcomes into what the buyer sees.

import { ApiError, el, get, money, notify, request, setUpSignIn } from "/assets/api.js";

const POLL_MS = 1500;
const products = new Map(); // sku → {product, card, stock}
const holds = new Map(); // reservation id → {reservation, node}

setUpSignIn("buyer", () => {
  document.getElementById("shop").hidden = false;
  loadProducts().then(() => {
    pollStock();
    setInterval(pollStock, POLL_MS);
  });
  loadOrders();
  setInterval(tickCountdowns, 250);
});

const nameOf = (sku) => products.get(sku)?.product.name ?? sku;

// --- products and live availability -------------------------------------------------------

async function loadProducts() {
  try {
    const list = await get("/api/v1/products");
    const cards = list.map((product) => {
      const card = el("li", { class: "card", "data-sku": product.sku },
        el("h3", {}, product.name, " ", el("span", { class: "sku" }, product.sku)),
        el("p", { class: "price" }, money(product.price_cents)),
        el("p", { class: "availability", "data-role": "availability" }, "…"),
        el("p", { class: "muted" }, `limit ${product.per_buyer_limit} per buyer`),
        el("button", { type: "button", "data-role": "reserve", onclick: (e) => reserve(product.sku, e.target) }, "Reserve"),
      );
      products.set(product.sku, { product, card, stock: null });
      return card;
    });
    document.getElementById("products").replaceChildren(...cards);
  } catch (error) {
    notify(genericMessage(error, "load the products"), "error");
  }
}

/** Polls every SKU's counters (cheap, public) and redraws its availability. */
async function pollStock() {
  await Promise.all([...products.keys()].map(refreshStock));
}

async function refreshStock(sku) {
  const entry = products.get(sku);
  try {
    const response = await fetch(`/api/v1/stock/${encodeURIComponent(sku)}`);
    if (!response.ok) throw new Error(String(response.status));
    entry.stock = await response.json();
    entry.card.classList.remove("stale");
  } catch {
    entry.card.classList.add("stale"); // keep the last known numbers, greyed out
    return;
  }
  const { available, state } = entry.stock;
  const line = entry.card.querySelector("[data-role=availability]");
  const button = entry.card.querySelector("[data-role=reserve]");
  entry.card.dataset.state = state;
  if (state === "paused") {
    line.textContent = "Sale paused";
    button.textContent = "Sale paused";
  } else if (state === "sold_out") {
    line.textContent = "Sold out";
    button.textContent = "Sold out";
  } else {
    line.textContent = `${available} available`;
    button.textContent = "Reserve";
  }
  if (!button.dataset.busy) button.disabled = state !== "on_sale";
}

// --- reserve, hold, confirm, release ------------------------------------------------------

async function reserve(sku, button) {
  button.dataset.busy = "1";
  button.disabled = true;
  notify(`Reserving ${nameOf(sku)}…`);
  try {
    const { body, headers } = await request("POST", "/api/v1/reservations", { sku, qty: 1 }, {
      onRetry: retryNotice,
    });
    showHold(body, serverOffsetMs(headers));
    notify(`Reserved ${body.qty} × ${nameOf(sku)}. Confirm before the countdown runs out.`, "ok");
  } catch (error) {
    notify(reserveMessage(error, sku), "error");
  } finally {
    delete button.dataset.busy;
    refreshStock(sku);
  }
}

function reserveMessage(error, sku) {
  const name = nameOf(sku);
  switch (error.code) {
    case "sold_out":
    case "insufficient_stock":
      return `Sold out: there is no ${name} left.`;
    case "purchase_limit":
      return `Purchase limit reached: each buyer may hold or buy at most ${products.get(sku)?.product.per_buyer_limit} of ${name}.`;
    case "sale_paused":
      return `The sale of ${name} is paused right now. Try again when it reopens.`;
    case "unknown_sku":
      return `${name} is no longer sold.`;
    default:
      return genericMessage(error, `reserve ${name}`);
  }
}

/**
 * The server's clock minus this browser's, from a response's Date header (whole seconds, so
 * +0.5 s on average): the countdown runs on the server's time, whatever the browser's says.
 */
function serverOffsetMs(headers) {
  const date = Date.parse(headers.get("date") ?? "");
  return Number.isFinite(date) ? date + 500 - Date.now() : 0;
}

function showHold(reservation, offsetMs) {
  const list = document.getElementById("holds");
  if (!holds.size) list.replaceChildren();
  const node = el("li", { class: "hold", "data-reservation": reservation.reservation_id, "data-state": "held" },
    el("strong", {}, `${reservation.qty} × ${nameOf(reservation.sku)}`),
    el("span", { class: "countdown", "data-role": "countdown" }),
    el("button", { type: "button", "data-role": "confirm", onclick: () => confirmHold(reservation.reservation_id) }, "Confirm order"),
    el("button", { type: "button", class: "secondary", "data-role": "release", onclick: () => releaseHold(reservation.reservation_id) }, "Release"),
  );
  holds.set(reservation.reservation_id, { reservation, node, offsetMs });
  list.append(node);
  tickCountdowns();
}

/** Redraws every countdown; a hold whose time ran out is shown as expired. */
function tickCountdowns() {
  for (const hold of holds.values()) {
    if (hold.node.dataset.state !== "held") continue;
    const left = Date.parse(hold.reservation.expires_at) - (Date.now() + hold.offsetMs);
    if (left <= 0) {
      expireHold(hold);
      continue;
    }
    const seconds = Math.ceil(left / 1000);
    hold.node.querySelector("[data-role=countdown]").textContent =
      `held for ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }
}

function expireHold(hold) {
  const name = nameOf(hold.reservation.sku);
  finishHold(hold, "expired", "Hold expired: the unit went back on sale.");
  notify(`Your hold on ${name} expired; the unit went back on sale.`, "error");
}

/** Ends a hold's line: no more buttons, a final state and text. */
function finishHold(hold, state, text) {
  hold.node.dataset.state = state;
  hold.node.querySelector("[data-role=countdown]").textContent = text;
  hold.node.querySelectorAll("button").forEach((b) => b.remove());
}

async function confirmHold(id) {
  const hold = holds.get(id);
  const name = nameOf(hold.reservation.sku);
  hold.node.querySelectorAll("button").forEach((b) => (b.disabled = true));
  try {
    const { body: order } = await request("POST", "/api/v1/orders", { reservation_token: hold.reservation.token }, {
      onRetry: retryNotice,
    });
    finishHold(hold, "confirmed", `Ordered (…${order.order_id.slice(-8)})`);
    notify(`Order placed: ${order.qty} × ${name} for ${money(order.total)}.`, "ok");
    loadOrders();
  } catch (error) {
    if (error.code === "reservation_expired") {
      finishHold(hold, "expired", "Hold expired: the unit went back on sale.");
      notify(`Your hold on ${name} expired before you confirmed; the unit went back on sale.`, "error");
    } else if (error.code === "sold_out" || error.code === "insufficient_stock") {
      finishHold(hold, "released", "Sold out");
      notify(`Sold out: ${name} could not be ordered.`, "error");
    } else {
      // 503 after the retries, or no network: the hold is kept, confirming again is safe.
      hold.node.querySelectorAll("button").forEach((b) => (b.disabled = false));
      notify(`${genericMessage(error, `confirm ${name}`)} Your hold is kept: press Confirm again.`, "error");
    }
  }
  refreshStock(hold.reservation.sku);
}

async function releaseHold(id) {
  const hold = holds.get(id);
  try {
    await request("DELETE", `/api/v1/reservations/${encodeURIComponent(id)}`);
    finishHold(hold, "released", "Released");
    notify(`Released ${nameOf(hold.reservation.sku)}; it is back on sale.`, "ok");
  } catch (error) {
    notify(genericMessage(error, "release the hold"), "error");
  }
  refreshStock(hold.reservation.sku);
}

// --- my orders ----------------------------------------------------------------------------

async function loadOrders() {
  try {
    const orders = await get("/api/v1/orders");
    const rows = orders.map((order) =>
      el("tr", { "data-order": order.order_id, "data-status": order.status },
        el("td", { class: "mono" }, `…${order.order_id.slice(-8)}`),
        el("td", {}, nameOf(order.sku)),
        el("td", {}, order.qty),
        el("td", {}, money(order.total)),
        el("td", { "data-role": "status" }, order.status),
        el("td", {}, order.status === "confirmed"
          ? el("button", { type: "button", class: "secondary", onclick: () => cancel(order) }, "Cancel")
          : ""),
      ));
    const body = document.querySelector("#orders tbody");
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No orders yet."))]));
  } catch (error) {
    notify(genericMessage(error, "load your orders"), "error");
  }
}

async function cancel(order) {
  try {
    await request("POST", `/api/v1/orders/${encodeURIComponent(order.order_id)}/cancel`, undefined, {
      headers: { "If-Match": `"${order.version}"` },
    });
    notify(`Order for ${nameOf(order.sku)} cancelled; the stock went back.`, "ok");
  } catch (error) {
    if (error.status === 412) notify("This order changed meanwhile; the list is refreshed, try again.", "error");
    else if (error.status === 409) notify("This order can no longer be cancelled.", "error");
    else notify(genericMessage(error, "cancel the order"), "error");
  }
  loadOrders();
  refreshStock(order.sku);
}

/** Tells the buyer a retry is under way (api.js decides when; the key stays the same). */
function retryNotice(attempt, why) {
  const cause = why === "network" ? "No answer from the shop" : `The shop is busy (${why})`;
  notify(`${cause}; retrying safely… (attempt ${attempt + 1})`);
}

/** The message for failures every action shares. */
function genericMessage(error, action) {
  if (!(error instanceof ApiError)) return `Could not ${action}: ${error}`;
  if (error.code === "network") return `Network problem: could not ${action}. Check your connection and try again.`;
  if (error.status === 401) return "Your sign-in has expired: sign out and in again.";
  if (error.status === 429) return `The shop is very busy: could not ${action}. Try again in a moment.`;
  if (error.status === 503) return `The shop is temporarily unavailable: could not ${action}. Try again in a moment.`;
  return `Could not ${action}: ${error.message}`;
}
