// mixed.js — a realistic storefront mix on several SKUs, one of them a small hot drop that
// sells out mid-run.
//
//   k6 run -e TOKENS_FILE=/abs/tokens.json -e OPS_TOKEN=$OPS loadtests/mixed.js
//
// setup() creates SKUS products (default 5) `MX-<RUN_ID>-<i>` with STOCK units each (default
// 100000); the first has HOT_STOCK units (default 300). Journeys at RATE/s (default 100) for
// DURATION (default 2m), by weight: browse 60, buy (reserve → confirm) 20, abandon (reserve →
// look → release) 8, buy then cancel with If-Match 4, own orders 8; plus a probe every 10 s
// that checks the live invariants (counters balance, SQL never above stock, Redis sold ≥ SQL
// sold). teardown() waits for the system to come to rest and checks: counters balance, sold =
// units in the buyers' orders = SQL sold (reconcile, zero drift), no reservation with two
// orders, nobody above the per-buyer limit.

import { buyers, integrityCheck, randomBuyer } from './lib/common.js';
import { abandon, browse, buy, buyAndCancel, createProducts, myOrders, pick, probe } from './lib/flows.js';

const RATE = Number(__ENV.RATE || 100);
const SKUS = Number(__ENV.SKUS || 5);
const STOCK = Number(__ENV.STOCK || 100000);
const HOT_STOCK = Number(__ENV.HOT_STOCK || 300);
const DURATION = __ENV.DURATION || '2m';
const PER_BUYER = Number(__ENV.PER_BUYER_LIMIT || 1000);

export const options = {
  scenarios: {
    storefront: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Number(__ENV.VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 500),
      exec: 'storefront',
    },
    probe: {
      executor: 'constant-arrival-rate',
      rate: 1,
      timeUnit: __ENV.PROBE_EVERY || '10s',
      duration: DURATION,
      preAllocatedVUs: 1,
      maxVUs: 2,
      exec: 'invariants',
    },
  },
  setupTimeout: '120s',
  teardownTimeout: '600s',
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:reserve}': ['p(95)<300', 'p(99)<1000'],
    'http_req_duration{name:confirm}': ['p(95)<500', 'p(99)<1500'],
    'http_req_duration{name:stock}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{name:products}': ['p(95)<300', 'p(99)<800'],
    flow_unexpected: ['count==0'],
    integrity_violations: ['count==0'],
    dropped_iterations: [`count<${Math.max(10, RATE)}`],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const products = createProducts('MX', SKUS, STOCK, { hotStock: HOT_STOCK, perBuyerLimit: PER_BUYER });
  return { products, skus: Object.keys(products) };
}

export function storefront(data) {
  const b = randomBuyer();
  pick([
    [60, () => browse(data.skus)],
    [20, () => buy(data.skus, b)],
    [8, () => abandon(data.skus, b)],
    [4, () => buyAndCancel(data.skus, b)],
    [8, () => myOrders(b)],
  ])();
}

export function invariants(data) {
  probe(data.products);
}

export function teardown(data) {
  const all = [];
  for (let i = 0; i < buyers.length; i++) all.push(i);
  integrityCheck(data.products, all, { perBuyerLimit: PER_BUYER, settleWaitS: 30 });
}
