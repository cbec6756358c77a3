// Shared helpers of the stockgate k6 scripts (k6 1.1): configuration from the environment,
// buyer tokens minted by `stockgate token`, requests that retry 429/503 after `Retry-After`,
// admin calls (products, reconcile) and the end-of-run integrity check.
//
// Environment (every script):
//   BASE_URL     the gateway, default http://127.0.0.1:8080 (local or remote)
//   TOKENS_FILE  JSON array from `stockgate token --sub-prefix buyer- --count N --format json`
//                (path relative to the script or absolute); default ./tokens.json
//   OPS_TOKEN    a token with the `ops` role (`stockgate token --sub ops --role ops`): creates
//                the run's products in setup() and reads the reconcile report in teardown()
//   RUN_ID       names this run's SKUs and idempotency keys; default: the start time
//   MAX_RETRIES  attempts after a 429/503 (default 5); RETRY_CAP_S caps one wait (default 5)

import http from 'k6/http';
import { check, sleep, fail } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const API = `${BASE_URL}/api/v1`;
export const OPS_TOKEN = __ENV.OPS_TOKEN || '';
export const RUN_ID = __ENV.RUN_ID || `${Date.now().toString(36)}`;
const MAX_RETRIES = Number(__ENV.MAX_RETRIES || 5);
const RETRY_CAP_S = Number(__ENV.RETRY_CAP_S || 5);

/** Every violated end-of-run invariant adds one; each script has `count==0` on it. */
export const integrityViolations = new Counter('integrity_violations');
/** Requests retried after a 429/503 (their `Retry-After` was honoured). */
export const retries = new Counter('retries_after_retry_after');

/** `[{sub, token}]` minted by `stockgate token --format json`, shared by all VUs. */
export const buyers = new SharedArray('buyers', () => {
  const list = JSON.parse(open(__ENV.TOKENS_FILE || './tokens.json'));
  if (!Array.isArray(list) || list.length === 0 || !list[0].token || !list[0].sub) {
    throw new Error('TOKENS_FILE must be the JSON array of `stockgate token --format json`');
  }
  return list;
});

/** A status the caller treats as an answer, not a failure (for `http_req_failed`). */
export function expect(...statuses) {
  return { responseCallback: http.expectedStatuses(...statuses) };
}

function authHeaders(token, extra) {
  const headers = Object.assign({ 'Content-Type': 'application/json' }, extra || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/**
 * One HTTP call that retries 429 and 503 (and connection failures, status 0) after the
 * answer's `Retry-After` seconds (1 s when absent), up to MAX_RETRIES times. Every retry
 * repeats the same Idempotency-Key, so a retried POST cannot act twice.
 */
export function call(method, url, body, { token, headers, name, expected } = {}) {
  const params = {
    headers: authHeaders(token, headers),
    tags: { name: name || url },
    responseCallback: http.expectedStatuses(...(expected || [{ min: 200, max: 299 }])),
  };
  const payload = body === undefined || body === null ? null : JSON.stringify(body);
  let res;
  for (let attempt = 0; ; attempt++) {
    res = http.request(method, url, payload, params);
    const retryable = res.status === 429 || res.status === 503 || res.status === 0;
    if (!retryable || attempt >= MAX_RETRIES) return res;
    retries.add(1, { name: params.tags.name });
    const header = Number(res.headers['Retry-After']);
    const wait = Number.isFinite(header) && header >= 0 ? header : 1;
    // A little jitter so a crowd told "1 s" does not come back in one burst.
    sleep(Math.min(wait, RETRY_CAP_S) * (1 + Math.random() * 0.2));
  }
}

export function json(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

/** Creates or updates a product (ops). Fails the run when it cannot. */
export function putProduct(sku, { totalStock, perBuyerLimit, maxPerOrder, price, name }) {
  if (!OPS_TOKEN) fail('OPS_TOKEN is required (stockgate token --sub ops --role ops)');
  const body = {
    name: name || `load test ${sku}`,
    price_cents: price || 1999,
    total_stock: totalStock,
    per_buyer_limit: perBuyerLimit,
    max_per_order: maxPerOrder || Math.min(perBuyerLimit, 10),
    sale_state: 'on_sale',
  };
  const res = call('PUT', `${API}/admin/products/${sku}`, body, {
    token: OPS_TOKEN,
    name: 'admin_put_product',
  });
  if (res.status !== 200 && res.status !== 201) {
    fail(`PUT /admin/products/${sku}: ${res.status} ${res.body}`);
  }
  return json(res);
}

export function stock(sku) {
  const res = call('GET', `${API}/stock/${sku}`, null, { name: 'stock' });
  return res.status === 200 ? json(res) : null;
}

/** The reconcile report entry of `sku` (ops), or null. */
export function reconcileEntry(sku) {
  if (!OPS_TOKEN) return null;
  const res = call('GET', `${API}/admin/reconcile`, null, { token: OPS_TOKEN, name: 'admin_reconcile' });
  const report = json(res);
  if (res.status !== 200 || !report || !Array.isArray(report.skus)) return null;
  return report.skus.find((s) => s.sku === sku) || null;
}

/** Records and logs one violated invariant. */
export function violation(message) {
  integrityViolations.add(1);
  console.error(`INTEGRITY: ${message}`);
}

/**
 * Every order of every buyer in `subs` (indexes into `buyers`), read through the buyer API
 * (`GET /api/v1/orders`, own orders only), in batches. Returns [{sub, order}].
 */
export function ordersOf(indexes) {
  const out = [];
  const BATCH = 40;
  for (let i = 0; i < indexes.length; i += BATCH) {
    const slice = indexes.slice(i, i + BATCH);
    const requests = slice.map((b) => ({
      method: 'GET',
      url: `${API}/orders`,
      params: { headers: authHeaders(buyers[b].token), tags: { name: 'check_orders' } },
    }));
    const responses = http.batch(requests);
    responses.forEach((res, j) => {
      const b = slice[j];
      let list = res.status === 200 ? json(res) : null;
      if (res.status === 429 || res.status === 503) {
        sleep(1);
        const again = http.get(`${API}/orders`, { headers: authHeaders(buyers[b].token) });
        list = again.status === 200 ? json(again) : null;
      }
      if (!Array.isArray(list)) {
        violation(`GET /orders for ${buyers[b].sub}: ${res.status}`);
        return;
      }
      if (list.length >= 100) {
        console.warn(`${buyers[b].sub} has >= 100 orders: the list is capped, counts are a floor`);
      }
      list.forEach((order) => out.push({ sub: buyers[b].sub, order }));
    });
  }
  return out;
}

/**
 * The end-of-run check for the SKUs in `products` ({sku: total_stock}): the stock counters
 * balance and never exceed the stock, SQL (reconcile report) agrees with them, and the
 * buyers' orders hold no duplicate reservation and no more units than SQL sold. Every
 * violation counts in `integrity_violations` (threshold `count==0`). Returns a summary.
 */
export function integrityCheck(
  products,
  buyerIndexes,
  { expectSoldOut = false, settleWaitS = 15, perBuyerLimit = 0 } = {},
) {
  const summary = { skus: {} };
  // Holds still `confirming` (a slow settlement) resolve within seconds: wait for them.
  const deadline = Date.now() + settleWaitS * 1000;
  for (const sku of Object.keys(products)) {
    let s = stock(sku);
    while (s && Date.now() < deadline) {
      const rec = reconcileEntry(sku);
      const confirming = rec && rec.store ? rec.store.confirming || 0 : 0;
      // At rest: nothing confirming, and Redis sold = SQL sold (cancellations relayed).
      if (confirming === 0 && (!rec || rec.sold_drift === 0)) break;
      sleep(0.5);
      s = stock(sku);
    }
    summary.skus[sku] = { stock: s };
  }

  const orders = ordersOf(buyerIndexes);
  const seenReservation = {};
  const seenOrder = {};
  const unitsBySku = {};
  const ordersBySku = {};
  const unitsByBuyer = {};
  for (const { sub, order } of orders) {
    if (!(order.sku in products)) continue;
    if (order.user_sub && order.user_sub !== sub) violation(`order ${order.order_id} of ${order.user_sub} listed for ${sub}`);
    if (seenOrder[order.order_id]) violation(`order ${order.order_id} listed twice`);
    seenOrder[order.order_id] = true;
    if (seenReservation[order.reservation_id]) {
      violation(`duplicate order for reservation ${order.reservation_id}`);
    }
    seenReservation[order.reservation_id] = true;
    if (order.status === 'cancelled') continue;
    const mine = `${sub} ${order.sku}`;
    unitsByBuyer[mine] = (unitsByBuyer[mine] || 0) + order.qty;
    if (perBuyerLimit && unitsByBuyer[mine] === perBuyerLimit + 1) {
      violation(`${sub} holds more than ${perBuyerLimit} units of ${order.sku}`);
    }
    unitsBySku[order.sku] = (unitsBySku[order.sku] || 0) + order.qty;
    ordersBySku[order.sku] = (ordersBySku[order.sku] || 0) + 1;
  }

  for (const sku of Object.keys(products)) {
    const total = products[sku];
    const s = summary.skus[sku].stock;
    const units = unitsBySku[sku] || 0;
    summary.skus[sku].orders = ordersBySku[sku] || 0;
    summary.skus[sku].order_units = units;
    if (!s) {
      violation(`no stock answer for ${sku}`);
      continue;
    }
    const sum = s.available + s.held + s.sold;
    if (sum !== total) violation(`${sku}: available ${s.available} + held ${s.held} + sold ${s.sold} = ${sum} != total ${total}`);
    if (s.sold > total) violation(`${sku}: OVERSELL, sold ${s.sold} > total ${total}`);
    if (units > total) violation(`${sku}: OVERSELL, orders hold ${units} units > total ${total}`);
    if (units !== s.sold) violation(`${sku}: orders hold ${units} units but the counters say sold ${s.sold}`);
    if (expectSoldOut && s.sold !== total) violation(`${sku}: expected ${total} sold, counters say ${s.sold}`);
    const rec = reconcileEntry(sku);
    summary.skus[sku].reconcile = rec;
    if (OPS_TOKEN) {
      if (!rec) {
        violation(`${sku}: missing from the reconcile report`);
      } else {
        if (rec.sql_sold > rec.sql_total_stock) violation(`${sku}: SQL OVERSELL ${rec.sql_sold} > ${rec.sql_total_stock}`);
        if (rec.sql_sold !== units) violation(`${sku}: SQL sold ${rec.sql_sold} != order units ${units}`);
        if (!rec.ok || rec.sold_drift !== 0) {
          violation(`${sku}: reconcile reports drift: ${JSON.stringify(rec)}`);
        }
      }
    }
  }
  console.log(`integrity summary: ${JSON.stringify(summary)}`);
  return summary;
}

/** Index of this iteration's buyer when every iteration is a different buyer. */
export function iterationBuyer() {
  return exec.scenario.iterationInTest % buyers.length;
}

export function randomBuyer() {
  return Math.floor(Math.random() * buyers.length);
}

export { check, sleep, http, exec };
