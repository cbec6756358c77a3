// browse.js — catalog and stock reads: the traffic between flash sales, and the flood of
// "is it still in stock?" reads during one.
//
//   k6 run -e TOKENS_FILE=/abs/tokens.json -e OPS_TOKEN=$OPS loadtests/browse.js
//
// setup() creates SKUS products (default 20) named `BR-<RUN_ID>-<i>`. A constant arrival
// rate of RATE journeys/s (default 200) for DURATION (default 1m): 80 % anonymous browsing
// (catalog list, one product page — conditional with If-None-Match once seen — and its live
// stock), 20 % signed-in buyers reading their own orders. Thresholds: < 1 % failed requests,
// p95/p99 latency per route. teardown() checks the run's SKUs: counters balance, nothing
// sold, SQL agrees (reconcile), no duplicate orders.

import { check, buyers, integrityCheck, randomBuyer } from './lib/common.js';
import { browse, createProducts, myOrders } from './lib/flows.js';

const RATE = Number(__ENV.RATE || 200);
const SKUS = Number(__ENV.SKUS || 20);
const STOCK = Number(__ENV.STOCK || 1000);

export const options = {
  scenarios: {
    browse: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: Number(__ENV.VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 400),
    },
  },
  setupTimeout: '120s',
  teardownTimeout: '300s',
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:products}': ['p(95)<300', 'p(99)<800'],
    'http_req_duration{name:product}': ['p(95)<300', 'p(99)<800'],
    'http_req_duration{name:stock}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{name:orders}': ['p(95)<400', 'p(99)<1000'],
    flow_unexpected: ['count==0'],
    integrity_violations: ['count==0'],
    dropped_iterations: [`count<${Math.max(10, RATE)}`],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const products = createProducts('BR', SKUS, STOCK);
  return { products, skus: Object.keys(products) };
}

export default function (data) {
  if (Math.random() < 0.8) browse(data.skus);
  else myOrders(randomBuyer());
}

export function teardown(data) {
  const sample = [];
  for (let i = 0; i < Math.min(buyers.length, 200); i++) sample.push(i);
  const summary = integrityCheck(data.products, sample, { settleWaitS: 2 });
  for (const sku of data.skus) {
    const s = summary.skus[sku].stock;
    check(s, { 'browse left stock untouched': (x) => x && x.sold === 0 && x.available === STOCK });
  }
}
