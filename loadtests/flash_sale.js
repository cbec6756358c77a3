// flash_sale.js — thousands of buyers arrive at once on one hot SKU: reserve → confirm.
//
//   k6 run -e TOKENS_FILE=/abs/tokens.json -e OPS_TOKEN=$OPS loadtests/flash_sale.js
//
// setup() creates a fresh SKU `FLASH-<RUN_ID>` with STOCK units (default 1000) and one unit
// per buyer. BUYERS buyers (default 5000, each a distinct `sub` from TOKENS_FILE) are run by
// VUS concurrent virtual users (default 1000), as fast as the gateway answers. Each buyer:
// POST /reservations (Idempotency-Key) → 201 → POST /orders with the reservation token;
// a 409 sold_out ends the buyer's attempt. REPLAY_PCT % of the buyers (default 10) send the
// same reserve and the same confirm a second time, which must answer 200 with the same
// reservation / order (idempotency). 429/503 are retried after their Retry-After.
//
// teardown() fails the run (threshold integrity_violations count==0) unless: the counters
// balance (available + held + sold = STOCK), sold = orders' units = SQL sold (reconcile) ≤
// STOCK, no reservation has two orders, and — when BUYERS ≥ STOCK — exactly STOCK were sold.
//
// Small smoke run: -e STOCK=20 -e BUYERS=60 -e VUS=10 (scripts/test.sh does this).

import { Counter, Trend } from 'k6/metrics';
import {
  API, RUN_ID, buyers, call, json, check, putProduct, stock, integrityCheck,
  iterationBuyer, violation,
} from './lib/common.js';

const STOCK = Number(__ENV.STOCK || 1000);
const BUYERS = Number(__ENV.BUYERS || 5000);
const VUS = Number(__ENV.VUS || 1000);
const REPLAY_PCT = Number(__ENV.REPLAY_PCT || 10);
const SKU = __ENV.SKU || `FLASH-${RUN_ID}`;

const reserved = new Counter('flash_reserved');
const soldOut = new Counter('flash_sold_out');
const ordered = new Counter('flash_orders_created');
const replayMismatch = new Counter('flash_replay_mismatch');
// A replayed reserve (same buyer, same Idempotency-Key) answered 409 sold_out instead of 200 with
// the buyer's reservation. One gateway replica always sends its own replays to the store, so
// against one gateway this must stay 0; behind several replicas a replay landing on another one
// within its sold-out window may see it (docs/design.md §7): run those with STRICT_REPLAY=0.
const replaySoldOut = new Counter('flash_replay_sold_out_409');
const STRICT_REPLAY = __ENV.STRICT_REPLAY !== '0';
const unexpected = new Counter('flash_unexpected');
const buyerTime = new Trend('flash_buyer_duration', true);

export const options = {
  scenarios: {
    flash_sale: {
      executor: 'shared-iterations',
      vus: Math.min(VUS, BUYERS),
      iterations: BUYERS,
      maxDuration: __ENV.MAX_DURATION || '5m',
    },
  },
  setupTimeout: '60s',
  teardownTimeout: '300s',
  thresholds: {
    // 409 sold_out is an answer, not a failure: anything else outside 2xx counts.
    http_req_failed: ['rate<0.01'],
    // All buyers arrive at once: with VUS requests in flight, latency ≈ VUS / throughput
    // (Little's law), about 0.5 s for 1000 VUs at ~2k req/s on 2 shared cores.
    'http_req_duration{name:reserve}': ['p(95)<3000', 'p(99)<5000'],
    'http_req_duration{name:confirm}': ['p(95)<3000', 'p(99)<5000'],
    flash_unexpected: ['count==0'],
    flash_replay_mismatch: ['count==0'],
    ...(STRICT_REPLAY ? { flash_replay_sold_out_409: ['count==0'] } : {}),
    integrity_violations: ['count==0'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  if (buyers.length < BUYERS) {
    throw new Error(`TOKENS_FILE holds ${buyers.length} buyers, BUYERS=${BUYERS}: mint more`);
  }
  putProduct(SKU, { totalStock: STOCK, perBuyerLimit: 1, maxPerOrder: 1, name: 'flash sale' });
  const s = stock(SKU);
  if (!s || s.available !== STOCK) throw new Error(`fresh SKU ${SKU} reads ${JSON.stringify(s)}`);
  console.log(`flash sale ${SKU}: ${STOCK} units, ${BUYERS} buyers, ${Math.min(VUS, BUYERS)} VUs`);
  return { sku: SKU };
}

export default function (data) {
  const b = iterationBuyer();
  const { sub, token } = buyers[b];
  const started = Date.now();
  const replay = (b * 7919) % 100 < REPLAY_PCT;
  const reserveKey = `fs-${RUN_ID}-${sub}`;

  const reserve = () =>
    call('POST', `${API}/reservations`, { sku: data.sku, qty: 1 }, {
      token,
      headers: { 'Idempotency-Key': reserveKey },
      name: 'reserve',
      expected: [200, 201, 409],
    });
  const r = reserve();
  if (r.status === 409) {
    soldOut.add(1);
    check(r, { 'reserve: sold out is a 409 problem': (res) => (json(res) || {}).code !== undefined });
    buyerTime.add(Date.now() - started);
    return;
  }
  const hold = json(r);
  if (!check(r, { 'reserve: 201 with a token': (res) => res.status === 201 && hold && hold.token })) {
    unexpected.add(1, { step: 'reserve', status: String(r.status) });
    console.warn(`reserve ${sub}: ${r.status} ${r.body}`);
    return;
  }
  reserved.add(1);
  if (replay) {
    const res = reserve();
    const again = json(res);
    if (res.status === 409 && again && again.code === 'sold_out') {
      replaySoldOut.add(1);
    } else if (res.status !== 200 || !again || again.reservation_id !== hold.reservation_id) {
      replayMismatch.add(1, { step: 'reserve' });
      console.warn(`reserve replay for ${sub}: ${res.status} ${res.body}`);
    }
  }

  const confirmKey = `fo-${RUN_ID}-${sub}`;
  const confirm = () =>
    call('POST', `${API}/orders`, { reservation_token: hold.token }, {
      token,
      headers: { 'Idempotency-Key': confirmKey },
      name: 'confirm',
      expected: [200, 201],
    });
  const c = confirm();
  const order = json(c);
  if (!check(c, { 'confirm: 201 with an order': (res) => res.status === 201 && order && order.order_id })) {
    unexpected.add(1, { step: 'confirm', status: String(c.status) });
    console.warn(`confirm ${sub}: ${c.status} ${c.body}`);
    return;
  }
  ordered.add(1);
  if (replay) {
    const again = confirm();
    const same = json(again);
    if (again.status !== 200 || !same || same.order_id !== order.order_id) {
      replayMismatch.add(1, { step: 'confirm' });
      violation(`confirm replay for ${hold.reservation_id}: ${again.status} ${again.body}`);
    }
  }
  buyerTime.add(Date.now() - started);
}

export function teardown(data) {
  const indexes = [];
  for (let i = 0; i < BUYERS; i++) indexes.push(i);
  const summary = integrityCheck({ [data.sku]: STOCK }, indexes, {
    expectSoldOut: BUYERS >= STOCK,
    perBuyerLimit: 1,
  });
  const s = summary.skus[data.sku];
  const expected = Math.min(STOCK, BUYERS);
  if (s.orders !== expected) violation(`${data.sku}: ${s.orders} orders, expected exactly ${expected}`);
  console.log(
    `FLASH SALE RESULT sku=${data.sku} stock=${STOCK} buyers=${BUYERS} orders=${s.orders} ` +
      `sold=${s.stock && s.stock.sold} available=${s.stock && s.stock.available} held=${s.stock && s.stock.held} ` +
      `sql_sold=${s.reconcile ? s.reconcile.sql_sold : 'n/a'}`,
  );
}
