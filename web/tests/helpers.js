// Shared steps of the browser tests: dev tokens, products made through the ops API (each
// test works on its own SKU, so tests never see each other's stock), signing a page in, and
// reading the truth back from the API.
const { expect } = require("@playwright/test");

let counter = 0;
/** A SKU no other test (or earlier run) uses. */
function uniqueSku(label) {
  counter += 1;
  return `${label}-${Date.now().toString(36)}-${counter}`;
}

async function devToken(request, buyer, role = "buyer") {
  const response = await request.post("/dev/token", { data: { buyer, role } });
  expect(response.status(), await response.text()).toBe(200);
  return (await response.json()).token;
}

const bearer = (token) => ({ Authorization: `Bearer ${token}` });

/** Creates or changes a product through the ops API; returns the product view. */
async function putProduct(request, sku, fields = {}) {
  const ops = await devToken(request, "ops-tests", "ops");
  const response = await request.put(`/api/v1/admin/products/${sku}`, {
    headers: bearer(ops),
    data: {
      name: `Test item ${sku}`,
      price_cents: 1500,
      total_stock: 5,
      per_buyer_limit: 2,
      sale_state: "on_sale",
      ...fields,
    },
  });
  expect([200, 201], await response.text()).toContain(response.status());
  return response.json();
}

async function stockOf(request, sku) {
  const response = await request.get(`/api/v1/stock/${sku}`);
  expect(response.status()).toBe(200);
  return response.json();
}

async function ordersOf(request, token) {
  const response = await request.get("/api/v1/orders", { headers: bearer(token) });
  expect(response.status()).toBe(200);
  return response.json();
}

/** The settlement's drift report line for one SKU (SQL sold next to the Redis counters). */
async function reconcileLine(request, sku) {
  const ops = await devToken(request, "ops-tests", "ops");
  const response = await request.get("/api/v1/admin/reconcile", { headers: bearer(ops) });
  expect(response.status()).toBe(200);
  return (await response.json()).skus.find((line) => line.sku === sku);
}

/** Opens `path` and signs in through the page's form. */
async function signIn(page, name, path = "/") {
  await page.goto(path);
  await page.locator("#signin input[name=buyer]").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.locator("#who")).toContainText(`signed in as ${name}`);
}

const card = (page, sku) => page.locator(`.card[data-sku="${sku}"]`);
const notice = (page) => page.locator("#notice .notice");

module.exports = {
  uniqueSku, devToken, bearer, putProduct, stockOf, ordersOf, reconcileLine, signIn, card, notice,
};
