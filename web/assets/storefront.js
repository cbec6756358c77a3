// The storefront: products with live availability, reserve → hold with a countdown →
// confirm, and "my orders" with cancel. Every call goes through api.js (idempotency keys and
// retries live there); this module turns outcomes into what the buyer sees.
//
// Holds survive the page: the server lists the buyer's open holds of each product
// (GET /api/v1/reservations?sku=, with a token to confirm them), which the page shows on load
// and again whenever another tab changes a hold (a `storage` event). What only the browser
// knows, a reserve not answered yet, lives in localStorage (see `pending`), so a reserve
// retried after a reload carries its first Idempotency-Key and replays its hold.

import { ApiError, el, get, money, newIdempotencyKey, notify, request, session, setUpSignIn } from "/assets/api.js";

const POLL_MS = 1500;
/** How long the server remembers an Idempotency-Key (a hold's life plus 24 h; a day is safe). */
const KEY_MEMORY_MS = 24 * 3600 * 1000;
const products = new Map(); // sku → {product, card, stock}
const holds = new Map(); // reservation id → {reservation, node, offsetMs, confirming}

// --- what the browser keeps across reloads and tabs ----------------------------------------

/**
 * The buyer's reserves that have no answer yet, by Idempotency-Key: `{sku, qty, at}`, in
 * localStorage under one key per buyer. A key is dropped once the server decided (a hold, or
 * a refusal); after no answer (network, 429, 5xx) it stays, and the next reserve of that SKU
 * reuses it, after a reload too, so a hold the lost answer made is replayed, not doubled.
 * Every change of this entry also tells the other tabs to list the holds again.
 */
const pending = {
  storageKey: () => `stockgate.holds.${session()?.sub}`,
  read() {
    try {
      return JSON.parse(localStorage.getItem(this.storageKey())) || { reserves: {} };
    } catch {
      return { reserves: {} };
    }
  },
  write(state) {
    // `changed` makes every write a change, so the other tabs get their `storage` event.
    localStorage.setItem(this.storageKey(), JSON.stringify({ ...state, changed: `${Date.now()}-${Math.random()}` }));
  },
  /** The key of an unanswered reserve of `qty` × `sku`, or a new one, recorded before sending. */
  keyFor(sku, qty) {
    const state = this.read();
    const found = Object.entries(state.reserves).find(([, r]) => r.sku === sku && r.qty === qty);
    if (found) return found[0];
    const key = newIdempotencyKey();
    state.reserves[key] = { sku, qty, at: Date.now() };
    this.write(state);
    return key;
  },
  drop(key) {
    const state = this.read();
    delete state.reserves[key];
    this.write(state);
  },
  /** Tells the other tabs that a hold changed (a confirm or a release). */
  touch() {
    this.write(this.read());
  },
  /** Forgets keys the server no longer remembers either. */
  prune() {
    const state = this.read();
    const old = Object.keys(state.reserves).filter((key) => Date.now() - state.reserves[key].at > KEY_MEMORY_MS);
    if (!old.length) return;
    old.forEach((key) => delete state.reserves[key]);
    this.write(state);
  },
};

// setUpSignIn calls back at once when the tab is signed in: everything it uses is above.
setUpSignIn("buyer", () => {
  document.getElementById("shop").hidden = false;
  pending.prune();
  loadProducts().then(() => {
    pollStock();
    setInterval(pollStock, POLL_MS);
    refreshHolds();
  });
  loadOrders();
  setInterval(tickCountdowns, 250);
  // Another tab of this buyer reserved, confirmed or released: the server has the truth.
  window.addEventListener("storage", (event) => {
    if (event.key !== pending.storageKey()) return;
    refreshHolds();
    loadOrders();
  });
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
  const key = pending.keyFor(sku, 1);
  try {
    const { body, headers } = await request("POST", "/api/v1/reservations", { sku, qty: 1 }, {
      idempotencyKey: key,
      onRetry: retryNotice,
    });
    pending.drop(key);
    showHold({ ...body, state: "held" }, serverOffsetMs(headers));
    notify(`Reserved ${body.qty} × ${nameOf(sku)}. Confirm before the countdown runs out.`, "ok");
  } catch (error) {
    // Refused: nothing was held under this key. Undecided: keep it for the retry.
    if (!error.undecided) pending.drop(key);
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

const isFinal = (hold) => ["confirmed", "released", "expired"].includes(hold.node.dataset.state);

/**
 * Shows an open hold (`view`: the reserve's answer or a listed hold, with its token and
 * `state` held or confirming), or updates the one shown. A hold this tab is confirming, or
 * one already finished here, is left as it is: its own answer decides.
 */
function showHold(view, offsetMs) {
  let hold = holds.get(view.reservation_id);
  if (hold && (hold.confirming || isFinal(hold))) return;
  if (!hold) {
    const list = document.getElementById("holds");
    if (!holds.size) list.replaceChildren();
    const node = el("li", { class: "hold", "data-reservation": view.reservation_id });
    hold = { reservation: view, node, offsetMs, confirming: false };
    holds.set(view.reservation_id, hold);
    list.append(node);
  }
  hold.reservation = view;
  hold.offsetMs = offsetMs;
  // Redrawn only when the state changes, so a button being clicked is never swapped out.
  if (hold.node.dataset.state !== view.state) drawOpenHold(hold, view.state);
  tickCountdowns();
}

/**
 * An open hold's line: held (countdown, confirm, release) or confirming (a confirm reached
 * the shop but has no answer yet: confirming again is safe and gets the order or a clear 410).
 */
function drawOpenHold(hold, state) {
  const { reservation } = hold;
  const id = reservation.reservation_id;
  hold.node.dataset.state = state;
  hold.node.replaceChildren(
    el("strong", {}, `${reservation.qty} × ${nameOf(reservation.sku)}`),
    el("span", { class: "countdown", "data-role": "countdown" }, state === "confirming" ? "Order not confirmed yet" : ""),
    el("button", { type: "button", "data-role": "confirm", onclick: () => confirmHold(id) }, "Confirm order"),
    state === "held"
      ? el("button", { type: "button", class: "secondary", "data-role": "release", onclick: () => releaseHold(id) }, "Release")
      : null,
  );
}

/**
 * Redraws every countdown; a held hold whose time ran out is shown as expired. Only `held`
 * ones count down: a hold whose confirm is in flight keeps its line until the confirm
 * answers, because the order may still commit.
 */
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
  hold.confirming = true;
  hold.node.dataset.state = "confirming";
  hold.node.querySelector("[data-role=countdown]").textContent = "Confirming…";
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
      // The server says whether it is still held or already confirming.
      hold.confirming = false;
      hold.node.dataset.state = "";
      showHold({ ...hold.reservation, state: "confirming" }, hold.offsetMs);
      await settleFromServer(hold);
      notify(`${genericMessage(error, `confirm ${name}`)} Your hold is kept: press Confirm again.`, "error");
    }
  }
  hold.confirming = false;
  pending.touch();
  refreshStock(hold.reservation.sku);
}

async function releaseHold(id) {
  const hold = holds.get(id);
  try {
    await request("DELETE", `/api/v1/reservations/${encodeURIComponent(id)}`);
    finishHold(hold, "released", "Released");
    notify(`Released ${nameOf(hold.reservation.sku)}; it is back on sale.`, "ok");
    pending.touch();
  } catch (error) {
    notify(genericMessage(error, "release the hold"), "error");
  }
  refreshStock(hold.reservation.sku);
}

// --- holds from the server: after a reload, and when another tab changed one ---------------

let listing = null; // the refresh under way, if any
let listAgain = false; // a change came while it ran: one more round after it

/** Lists the buyer's open holds of every product shown and brings the page in line. */
async function refreshHolds() {
  if (listing) {
    listAgain = true;
    return;
  }
  listing = (async () => {
    do {
      listAgain = false;
      await Promise.all([...products.keys()].map(refreshHoldsOf));
    } while (listAgain);
  })();
  try {
    await listing;
  } finally {
    listing = null;
  }
}

async function refreshHoldsOf(sku) {
  let answer;
  try {
    answer = await request("GET", `/api/v1/reservations?sku=${encodeURIComponent(sku)}`);
  } catch (error) {
    notify(genericMessage(error, `load your holds of ${nameOf(sku)}`), "error");
    return;
  }
  const offsetMs = serverOffsetMs(answer.headers);
  const listed = new Set();
  for (const view of answer.body.holds) {
    listed.add(view.reservation_id);
    showHold(view, offsetMs);
  }
  // Open here, no longer listed: confirmed or released in another tab, or run out. (Or made
  // after the list was read: the server's answer for the one hold tells which.)
  const gone = [...holds.values()].filter((hold) =>
    hold.reservation.sku === sku && !listed.has(hold.reservation.reservation_id) && !hold.confirming && !isFinal(hold));
  await Promise.all(gone.map(settleFromServer));
}

/** Shows the hold as the server has it now; an error leaves the line as it is. */
async function settleFromServer(hold) {
  const id = hold.reservation.reservation_id;
  let view;
  try {
    ({ body: view } = await request("GET", `/api/v1/reservations/${encodeURIComponent(id)}`));
  } catch {
    return;
  }
  if (hold.confirming || isFinal(hold)) return; // this tab acted meanwhile: its answer decides
  switch (view.state) {
    case "confirmed":
      finishHold(hold, "confirmed", "Ordered");
      loadOrders();
      break;
    case "released":
      finishHold(hold, "released", "Released");
      break;
    case "expired":
      finishHold(hold, "expired", "Hold expired: the unit went back on sale.");
      break;
    default:
      showHold({ ...hold.reservation, state: view.state }, hold.offsetMs);
  }
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
