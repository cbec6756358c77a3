// Two operators at once (issue 15 item 5): a sale change from a console whose view is stale is
// refused with 412 and the console reloads and says so; restocks from two consoles both count.
// Run alone with: scripts/browser-tests.sh target/debug/stockgate tests/ops_edits.spec.js
const { test, expect } = require("@playwright/test");
const { uniqueSku, devToken, bearer, putProduct, signIn, notice } = require("./helpers");

async function product(request, sku) {
  const response = await request.get(`/api/v1/products/${sku}`);
  expect(response.status()).toBe(200);
  return response.json();
}

test("a change from a stale view gets 412: the console reloads, says so, and nothing is lost", async ({ page, request }) => {
  const sku = uniqueSku("STALE");
  const created = await putProduct(request, sku, { name: "Stale lamp", total_stock: 5 });
  expect(created.version).toBe(1);
  await signIn(page, "olga", "/ops");
  const row = page.locator(`#skus tr[data-sku="${sku}"]`);
  await expect(row.locator("[data-role=sale]")).toHaveText("open");

  // The console's view goes stale: its catalog reads keep answering the list as it was, until
  // it sends a change (then they pass again, so its reload sees the truth).
  const staleList = await (await request.get("/api/v1/products")).json();
  let stale = true;
  page.on("request", (r) => r.method() === "PUT" && (stale = false));
  await page.route("**/api/v1/products", (route) =>
    stale ? route.fulfill({ json: staleList }) : route.continue());

  // Meanwhile another operator changes the price (version 2).
  const ops = await devToken(request, "oscar", "ops");
  const repriced = await request.put(`/api/v1/admin/products/${sku}`, {
    headers: { ...bearer(ops), "If-Match": '"1"' },
    data: { ...created, price_cents: 2599, sku: undefined, sold: undefined, version: undefined, updated_at: undefined },
  });
  expect(repriced.status(), await repriced.text()).toBe(200);

  // Olga pauses from her stale view: refused, told, reloaded; the price change stands.
  const put = page.waitForResponse((r) => r.request().method() === "PUT");
  await row.getByRole("button", { name: "Pause sale" }).click();
  const refused = await put;
  expect(refused.status()).toBe(412);
  expect(refused.request().headers()["if-match"]).toBe('"1"');
  await expect(notice(page)).toHaveText(
    "Stale lamp was changed by someone else meanwhile, so nothing was changed: the console reloaded it. Check it and try again.",
  );
  expect(await product(request, sku)).toMatchObject({ version: 2, price_cents: 2599, sale_state: "on_sale" });

  // Her second try is made from the reloaded view (version 2) and goes through.
  const second = page.waitForResponse((r) => r.request().method() === "PUT");
  await row.getByRole("button", { name: "Pause sale" }).click();
  expect((await second).request().headers()["if-match"]).toBe('"2"');
  await expect(notice(page)).toHaveText("Stale lamp paused.");
  await expect(row.locator("[data-role=sale]")).toHaveText("paused");
  expect(await product(request, sku)).toMatchObject({ version: 3, price_cents: 2599, sale_state: "paused" });
});

test("restocks from two consoles at once both count", async ({ browser, request }) => {
  const sku = uniqueSku("RESTOCK");
  await putProduct(request, sku, { name: "Restocked mug", total_stock: 5 });
  const consoles = [];
  for (const name of ["olga", "oscar"]) {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, name, "/ops");
    const row = page.locator(`#skus tr[data-sku="${sku}"]`);
    await expect(row.locator("[data-role=available]")).toHaveText("5");
    await row.locator("[data-role=restock-amount]").fill("5");
    consoles.push({ page, row });
  }
  // Both views show 5 units; both operators add 5 at the same moment.
  const posts = consoles.map(({ page }) => page.waitForResponse((r) => r.url().endsWith("/restock")));
  await Promise.all(consoles.map(({ row }) => row.getByRole("button", { name: "Restock" }).click()));
  for (const answer of await Promise.all(posts)) {
    expect(answer.status()).toBe(200);
    expect(answer.request().postDataJSON()).toEqual({ units: 5 });
  }
  expect(await product(request, sku)).toMatchObject({ total_stock: 15 });
  for (const { row } of consoles) await expect(row.locator("[data-role=available]")).toHaveText("15");
});
