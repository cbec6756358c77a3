// Storefront flows shared by browse.js, mixed.js and soak.js. Each flow is one user journey;
// every POST carries a fresh Idempotency-Key that its retries repeat.

import { Counter } from 'k6/metrics';
import {
  API, RUN_ID, buyers, call, json, check, exec, putProduct, reconcileEntry, sleep, stock, violation,
} from './common.js';

export const flowErrors = new Counter('flow_unexpected');
export const ordersCreated = new Counter('orders_created');
export const ordersCancelled = new Counter('orders_cancelled');
export const holdsReleased = new Counter('holds_released');
export const soldOutAnswers = new Counter('sold_out_answers');

function key(kind) {
  return `${kind}-${RUN_ID}-${exec.vu.idInTest}-${exec.scenario.name}-${exec.vu.iterationInScenario}`;
}

function unexpected(step, res) {
  flowErrors.add(1, { step });
  console.warn(`${step}: ${res.status} ${String(res.body).slice(0, 300)}`);
}

/** Creates the run's products: {sku: total_stock}. */
export function createProducts(prefix, count, totalStock, { hotStock = 0, perBuyerLimit = 1000 } = {}) {
  const products = {};
  for (let i = 0; i < count; i++) {
    const sku = `${prefix}-${RUN_ID}-${i}`;
    const total = i === 0 && hotStock > 0 ? hotStock : totalStock;
    putProduct(sku, { totalStock: total, perBuyerLimit, maxPerOrder: 3 });
    products[sku] = total;
  }
  return products;
}

// Per-VU ETag memory, so some product reads revalidate (304).
const etags = {};

/** Catalog list, one product page (conditional when seen before), its live stock. */
export function browse(skus) {
  const list = call('GET', `${API}/products`, null, { name: 'products' });
  if (!check(list, { 'products: 200': (r) => r.status === 200 })) unexpected('products', list);
  const sku = skus[Math.floor(Math.random() * skus.length)];
  const headers = etags[sku] ? { 'If-None-Match': etags[sku] } : {};
  const page = call('GET', `${API}/products/${sku}`, null, {
    headers, name: 'product', expected: [200, 304],
  });
  if (!check(page, { 'product: 200/304': (r) => r.status === 200 || r.status === 304 })) {
    unexpected('product', page);
  } else if (page.headers.Etag) {
    etags[sku] = page.headers.Etag;
  }
  const s = call('GET', `${API}/stock/${sku}`, null, { name: 'stock' });
  const body = json(s);
  if (!check(s, { 'stock: 200': (r) => r.status === 200 && body && body.sku === sku })) unexpected('stock', s);
}

function reserve(sku, b, qty) {
  const res = call('POST', `${API}/reservations`, { sku, qty }, {
    token: buyers[b].token,
    headers: { 'Idempotency-Key': key('r') },
    name: 'reserve',
    expected: [200, 201, 409, 422],
  });
  if (res.status === 409 || res.status === 422) {
    // sold_out / insufficient_stock / purchase_limit are answers of a busy sale.
    soldOutAnswers.add(1, { code: (json(res) || {}).code || String(res.status) });
    return null;
  }
  const hold = json(res);
  if (!check(res, { 'reserve: 201': (r) => r.status === 201 && hold && hold.token })) {
    unexpected('reserve', res);
    return null;
  }
  return hold;
}

function confirm(hold, b) {
  const res = call('POST', `${API}/orders`, { reservation_token: hold.token }, {
    token: buyers[b].token,
    headers: { 'Idempotency-Key': key('o') },
    name: 'confirm',
    expected: [200, 201],
  });
  const order = json(res);
  if (!check(res, { 'confirm: 201': (r) => r.status === 201 && order && order.order_id })) {
    unexpected('confirm', res);
    return null;
  }
  ordersCreated.add(1);
  return order;
}

/** Reserve 1–2 units, confirm. */
export function buy(skus, b) {
  const sku = skus[Math.floor(Math.random() * skus.length)];
  const hold = reserve(sku, b, 1 + Math.floor(Math.random() * 2));
  if (hold) confirm(hold, b);
}

/** Reserve, look at the hold, change one's mind: release it (stock returns). */
export function abandon(skus, b) {
  const sku = skus[Math.floor(Math.random() * skus.length)];
  const hold = reserve(sku, b, 1);
  if (!hold) return;
  const token = buyers[b].token;
  const seen = call('GET', `${API}/reservations/${hold.reservation_id}`, null, { token, name: 'reservation' });
  if (!check(seen, { 'reservation: held': (r) => r.status === 200 && (json(r) || {}).state === 'held' })) {
    unexpected('reservation', seen);
  }
  const del = call('DELETE', `${API}/reservations/${hold.reservation_id}`, null, {
    token, name: 'release', expected: [204],
  });
  if (!check(del, { 'release: 204': (r) => r.status === 204 })) unexpected('release', del);
  else holdsReleased.add(1);
}

/** Buy, then cancel the order with If-Match (optimistic locking). */
export function buyAndCancel(skus, b) {
  const sku = skus[Math.floor(Math.random() * skus.length)];
  const hold = reserve(sku, b, 1);
  if (!hold) return;
  const order = confirm(hold, b);
  if (!order) return;
  const res = call('POST', `${API}/orders/${order.order_id}/cancel`, null, {
    token: buyers[b].token,
    headers: { 'If-Match': `"${order.version}"`, 'Idempotency-Key': key('c') },
    name: 'cancel',
  });
  if (!check(res, { 'cancel: 200 cancelled': (r) => r.status === 200 && (json(r) || {}).status === 'cancelled' })) {
    unexpected('cancel', res);
  } else {
    ordersCancelled.add(1);
  }
}

/** The buyer's own order list. */
export function myOrders(b) {
  const res = call('GET', `${API}/orders`, null, { token: buyers[b].token, name: 'orders' });
  if (!check(res, { 'orders: 200 list': (r) => r.status === 200 && Array.isArray(json(r)) })) unexpected('orders', res);
}

/** A live (not at rest) invariant probe: counters balance, Redis sold ≥ SQL sold, SQL ≤ stock. */
export function probe(products) {
  for (const sku of Object.keys(products)) {
    const s = stock(sku);
    if (!s) {
      violation(`probe: no stock for ${sku}`);
      continue;
    }
    if (s.available + s.held + s.sold !== products[sku]) violation(`probe: ${sku} counters ${JSON.stringify(s)}`);
    if (s.sold > products[sku]) violation(`probe: ${sku} OVERSELL ${JSON.stringify(s)}`);
    // The report reads SQL, then the store: a cancellation committed and relayed in between
    // shows as a negative drift for a moment. Only a drift that persists is a violation.
    const bad = (r) => r && (!r.balanced || r.sold_drift < 0 || r.sql_sold > r.sql_total_stock);
    let rec = reconcileEntry(sku);
    for (let i = 0; i < 3 && bad(rec); i++) {
      sleep(0.5);
      rec = reconcileEntry(sku);
    }
    if (bad(rec)) violation(`probe: ${sku} reconcile ${JSON.stringify(rec)}`);
  }
}

/** Picks one entry of [[weight, fn], ...] by weight. */
export function pick(weighted) {
  const total = weighted.reduce((sum, [w]) => sum + w, 0);
  let r = Math.random() * total;
  for (const [w, fn] of weighted) {
    if ((r -= w) < 0) return fn;
  }
  return weighted[weighted.length - 1][1];
}
