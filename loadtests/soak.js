// soak.js — long and steady: the mixed storefront at a modest constant rate for an hour
// (default), to find leaks, creeping latency, drift between Redis and SQL, and holds that
// expire under load (a share of buyers reserve and walk away; the sweeper must return the
// units).
//
//   k6 run -e TOKENS_FILE=/abs/tokens.json -e OPS_TOKEN=$OPS -e DURATION=1h loadtests/soak.js
//
// RATE journeys/s (default 30) on SKUS products (default 5, STOCK each, default 1000000):
// browse 55, buy 20, abandon-by-release 6, walk away (hold left to expire) 2, buy then cancel
// 4, own orders 13; a probe every 30 s checks the live invariants. teardown() as in mixed.js;
// holds left behind are still `held` until they expire (hold_ttl_secs), which the counters
// show as held, so the at-rest check accounts for them.
// Mint enough buyers that no one has 100 orders (the list cap): about RATE × seconds / 400.

import { Counter } from 'k6/metrics';
import { API, RUN_ID, buyers, call, exec, integrityCheck, randomBuyer } from './lib/common.js';
import { abandon, browse, buy, buyAndCancel, createProducts, myOrders, pick, probe } from './lib/flows.js';

const RATE = Number(__ENV.RATE || 30);
const SKUS = Number(__ENV.SKUS || 5);
const STOCK = Number(__ENV.STOCK || 1000000);
const DURATION = __ENV.DURATION || '1h';
const PER_BUYER = Number(__ENV.PER_BUYER_LIMIT || 100000);

const walkedAway = new Counter('holds_walked_away');

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Number(__ENV.VUS || 20),
      maxVUs: Number(__ENV.MAX_VUS || 200),
      exec: 'steady',
    },
    probe: {
      executor: 'constant-arrival-rate',
      rate: 1,
      timeUnit: __ENV.PROBE_EVERY || '30s',
      duration: DURATION,
      preAllocatedVUs: 1,
      maxVUs: 2,
      exec: 'invariants',
    },
  },
  setupTimeout: '120s',
  teardownTimeout: '900s',
  thresholds: {
    http_req_failed: ['rate<0.005'],
    'http_req_duration{name:reserve}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{name:confirm}': ['p(95)<300', 'p(99)<1000'],
    'http_req_duration{name:stock}': ['p(95)<100', 'p(99)<300'],
    flow_unexpected: ['count==0'],
    integrity_violations: ['count==0'],
    dropped_iterations: ['count<100'],
    checks: ['rate>0.995'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const products = createProducts('SK', SKUS, STOCK, { perBuyerLimit: PER_BUYER });
  return { products, skus: Object.keys(products) };
}

function walkAway(skus, b) {
  const sku = skus[Math.floor(Math.random() * skus.length)];
  const res = call('POST', `${API}/reservations`, { sku, qty: 1 }, {
    token: buyers[b].token,
    headers: { 'Idempotency-Key': `w-${RUN_ID}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}` },
    name: 'reserve',
    expected: [200, 201, 409, 422],
  });
  if (res.status === 201) walkedAway.add(1);
}

export function steady(data) {
  const b = randomBuyer();
  pick([
    [55, () => browse(data.skus)],
    [20, () => buy(data.skus, b)],
    [6, () => abandon(data.skus, b)],
    [2, () => walkAway(data.skus, b)],
    [4, () => buyAndCancel(data.skus, b)],
    [13, () => myOrders(b)],
  ])();
}

export function invariants(data) {
  probe(data.products);
}

export function teardown(data) {
  const all = [];
  for (let i = 0; i < buyers.length; i++) all.push(i);
  integrityCheck(data.products, all, { perBuyerLimit: PER_BUYER, settleWaitS: 60 });
}
