// The storefront and ops console in Debian's chromium against all-in-one on real Redis and
// PostgreSQL (started by scripts/browser-tests.sh). Each test makes its own product and
// buyers, so none depends on another's stock.
const path = require("node:path");
const { test, expect } = require("@playwright/test");
const {
  uniqueSku, devToken, bearer, putProduct, stockOf, ordersOf, reconcileLine, signIn, card, notice,
} = require("./helpers");

const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "test-results";

/** Records the POSTs a page sends to the API: method, path, Idempotency-Key, answer status. */
function recordPosts(page) {
  const posts = [];
  page.on("response", (response) => {
    const request = response.request();
    if (request.method() !== "POST" || !new URL(request.url()).pathname.startsWith("/api/")) return;
    posts.push({
      path: new URL(request.url()).pathname,
      key: request.headers()["idempotency-key"],
      status: response.status(),
    });
  });
  return posts;
}

test("screenshots of the storefront and the ops console", async ({ page, browser, request }) => {
  await signIn(page, "alice");
  await card(page, "HOT").getByRole("button", { name: "Reserve" }).click();
  await page.locator(".hold[data-state=held]").getByRole("button", { name: "Confirm order" }).click();
  await expect(notice(page)).toContainText("Order placed");
  await card(page, "TEE").getByRole("button", { name: "Reserve" }).click();
  await expect(page.locator(".hold[data-state=held] .countdown")).toContainText("held for");
  await expect(card(page, "TEE").locator("[data-role=availability]")).toHaveText("499 available");
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, "storefront.png"), fullPage: true });

  const ops = await (await browser.newContext()).newPage();
  await signIn(ops, "olga", "/ops");
  await expect(ops.locator("#skus tr[data-sku=HOT] [data-role=sold]")).toHaveText("1");
  // Some traffic for the rates (they need two readings of the counters): reservations by
  // twenty buyers over five seconds, and a buyer retrying too fast (429 from the tight rule).
  const traffic = (async () => {
    for (let i = 0; i < 20; i++) {
      const token = await devToken(request, `shopper-${i}`);
      for (const attempt of [1, 2]) {
        await request.post("/api/v1/reservations", {
          headers: { ...bearer(token), "Idempotency-Key": `shot-${i}-${attempt}` },
          data: { sku: "MUG", qty: 1 },
        });
        if (i % 4) break; // every fourth buyer asks twice at once
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();
  await expect(ops.locator("#rate-reservations")).toHaveText(/^[1-9]/);
  await ops.screenshot({ path: path.join(SCREENSHOT_DIR, "ops-console.png"), fullPage: true });
  await traffic;
});

test("buy a product end to end", async ({ page, request }) => {
  const sku = uniqueSku("BUY");
  await putProduct(request, sku, { name: "End-to-end mug", total_stock: 3 });
  const posts = recordPosts(page);
  // A script blocked by the content security policy, or one that throws, shows up here.
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  await signIn(page, "buyer-e2e");
  const item = card(page, sku);
  await expect(item.locator("[data-role=availability]")).toHaveText("3 available");

  await item.getByRole("button", { name: "Reserve" }).click();
  await expect(notice(page)).toContainText("Reserved 1 × End-to-end mug");
  const hold = page.locator(".hold[data-state=held]");
  await expect(hold.locator(".countdown")).toContainText("held for 0:0");
  // Live availability: the poll shows the held unit gone without a reload.
  await expect(item.locator("[data-role=availability]")).toHaveText("2 available");

  await hold.getByRole("button", { name: "Confirm order" }).click();
  await expect(notice(page)).toContainText("Order placed: 1 × End-to-end mug for $15.00");
  const row = page.locator("#orders tbody tr[data-status=confirmed]");
  await expect(row).toHaveCount(1);
  await expect(row).toContainText("End-to-end mug");

  const token = await devToken(request, "buyer-e2e");
  const orders = (await ordersOf(request, token)).filter((o) => o.sku === sku);
  expect(orders.map((o) => [o.qty, o.status])).toEqual([[1, "confirmed"]]);
  expect(await stockOf(request, sku)).toMatchObject({ available: 2, held: 0, sold: 1 });
  expect((await reconcileLine(request, sku)).sql_sold).toBe(1);
  // Every POST carried its own Idempotency-Key (one per user action).
  expect(posts.map((p) => p.path)).toEqual(["/api/v1/reservations", "/api/v1/orders"]);
  expect(posts.every((p) => /^[0-9a-f]{32}$/.test(p.key))).toBe(true);
  expect(posts[0].key).not.toBe(posts[1].key);

  // My orders → Cancel (If-Match with the order's version): the unit goes back on sale.
  await row.getByRole("button", { name: "Cancel" }).click();
  await expect(notice(page)).toHaveText("Order for End-to-end mug cancelled; the stock went back.");
  await expect(page.locator("#orders tbody tr[data-status=cancelled]")).toHaveCount(1);
  await expect(item.locator("[data-role=availability]")).toHaveText("3 available");
  expect((await reconcileLine(request, sku)).sql_sold).toBe(0);
  expect(errors).toEqual([]);
});

test("two browser contexts race for the last unit: one order, one clear sold out", async ({ browser, request }) => {
  const sku = uniqueSku("RACE");
  await putProduct(request, sku, { name: "Last hoodie", total_stock: 1 });
  const buyers = ["racer-a", "racer-b"];
  const pages = [];
  for (const buyer of buyers) {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, buyer);
    await expect(card(page, sku).locator("[data-role=availability]")).toHaveText("1 available");
    pages.push(page);
  }
  await Promise.all(pages.map((page) => card(page, sku).getByRole("button", { name: "Reserve" }).click()));

  const outcomes = [];
  for (const page of pages) {
    await expect(notice(page)).toHaveText(/Reserved 1 × Last hoodie|Sold out: there is no Last hoodie left\./);
    outcomes.push(await notice(page).textContent());
  }
  const winner = outcomes.findIndex((text) => text.startsWith("Reserved"));
  const loser = 1 - winner;
  expect(winner).toBeGreaterThanOrEqual(0);
  expect(outcomes[loser]).toBe("Sold out: there is no Last hoodie left.");
  await expect(card(pages[loser], sku).getByRole("button", { name: "Sold out" })).toBeDisabled();

  await pages[winner].locator(".hold[data-state=held]").getByRole("button", { name: "Confirm order" }).click();
  await expect(notice(pages[winner])).toContainText("Order placed");

  // Exactly one order, seen from the API and from SQL (the drift report's sold).
  let orders = 0;
  for (const buyer of buyers) {
    orders += (await ordersOf(request, await devToken(request, buyer))).filter((o) => o.sku === sku).length;
  }
  expect(orders).toBe(1);
  const line = await reconcileLine(request, sku);
  expect([line.sql_sold, line.ok]).toEqual([1, true]);
  expect(await stockOf(request, sku)).toMatchObject({ available: 0, sold: 1, state: "sold_out" });
});

test("a hold left to expire shows it expired and the stock returns", async ({ page, request }) => {
  const sku = uniqueSku("EXP");
  await putProduct(request, sku, { name: "Slow decision lamp", total_stock: 1 });
  await signIn(page, "buyer-slow");
  const item = card(page, sku);
  await item.getByRole("button", { name: "Reserve" }).click();
  await expect(item.locator("[data-role=availability]")).toHaveText("Sold out");
  const hold = page.locator(`.hold`).last();
  const id = await hold.getAttribute("data-reservation");

  // The hold TTL is 6 s in this setup: nobody confirms.
  await expect(hold).toHaveAttribute("data-state", "expired", { timeout: 20_000 });
  await expect(notice(page)).toHaveText("Your hold on Slow decision lamp expired; the unit went back on sale.");
  await expect(hold.getByRole("button")).toHaveCount(0);
  // The sweeper returns the unit; the live availability shows it without a reload.
  await expect(item.locator("[data-role=availability]")).toHaveText("1 available", { timeout: 20_000 });
  await expect(item.getByRole("button", { name: "Reserve" })).toBeEnabled();

  const token = await devToken(request, "buyer-slow");
  const reservation = await request.get(`/api/v1/reservations/${id}`, { headers: bearer(token) });
  expect((await reservation.json()).state).toBe("expired");
  expect(await stockOf(request, sku)).toMatchObject({ available: 1, held: 0, sold: 0 });
});

test("a 429 from a tight rate limit is retried and succeeds", async ({ page, request }) => {
  const sku = uniqueSku("RL");
  await putProduct(request, sku, { name: "Popular cap", total_stock: 5, per_buyer_limit: 2 });
  const posts = recordPosts(page);
  await signIn(page, "buyer-eager");
  const reserve = card(page, sku).getByRole("button", { name: "Reserve" });
  await reserve.click();
  await expect(page.locator(".hold[data-state=held]")).toHaveCount(1);
  // The rule admits one reservation per buyer and SKU every 2 s: this one meets a 429.
  await reserve.click();
  await expect(page.locator(".hold[data-state=held]")).toHaveCount(2, { timeout: 20_000 });
  await expect(notice(page)).toContainText("Reserved 1 × Popular cap");

  const reservations = posts.filter((p) => p.path === "/api/v1/reservations");
  const limited = reservations.filter((p) => p.status === 429);
  expect(limited.length).toBeGreaterThanOrEqual(1);
  expect(reservations.filter((p) => p.status === 201)).toHaveLength(2);
  // The retries of that one click reused its Idempotency-Key; the first click had its own.
  const retried = reservations.filter((p) => p.key === limited[0].key);
  expect(retried.at(-1).status).toBe(201);
  expect(reservations[0].key).not.toBe(limited[0].key);
  expect(await stockOf(request, sku)).toMatchObject({ available: 3, held: 2 });
});

test("the ops console pauses a sale and the storefront shows it", async ({ page, browser, request }) => {
  const sku = uniqueSku("PAUSE");
  await putProduct(request, sku, { name: "Paused poster", total_stock: 5 });
  await signIn(page, "buyer-watching");
  const item = card(page, sku);
  await expect(item.locator("[data-role=availability]")).toHaveText("5 available");

  const ops = await (await browser.newContext()).newPage();
  await signIn(ops, "olga", "/ops");
  const row = ops.locator(`#skus tr[data-sku="${sku}"]`);
  await row.getByRole("button", { name: "Pause sale" }).click();
  await expect(notice(ops)).toHaveText("Paused poster paused.");
  await expect(row.locator("[data-role=sale]")).toHaveText("paused");

  // The storefront follows without a reload, and the API refuses a reservation.
  await expect(item.locator("[data-role=availability]")).toHaveText("Sale paused");
  await expect(item.getByRole("button", { name: "Sale paused" })).toBeDisabled();
  const token = await devToken(request, "buyer-watching");
  const refused = await request.post("/api/v1/reservations", {
    headers: { ...bearer(token), "Idempotency-Key": `paused-${sku}` },
    data: { sku, qty: 1 },
  });
  expect(refused.status()).toBe(423);
  expect((await refused.json()).code).toBe("sale_paused");

  // Reopen and restock from the console: the storefront shows the new stock.
  await row.getByRole("button", { name: "Open sale" }).click();
  await expect(row.locator("[data-role=sale]")).toHaveText("open");
  await row.locator("[data-role=restock-amount]").fill("7");
  await row.getByRole("button", { name: "Restock" }).click();
  await expect(row.locator("[data-role=available]")).toHaveText("12");
  await expect(item.locator("[data-role=availability]")).toHaveText("12 available");
});

test("a purchase limit and a network failure each get a clear message", async ({ page, request }) => {
  const sku = uniqueSku("LIM");
  await putProduct(request, sku, { name: "One-per-buyer pin", total_stock: 5, per_buyer_limit: 1 });
  await signIn(page, "buyer-limited");
  const reserve = card(page, sku).getByRole("button", { name: "Reserve" });
  await reserve.click();
  await expect(page.locator(".hold[data-state=held]")).toHaveCount(1);
  await reserve.click();
  await expect(notice(page)).toHaveText(
    "Purchase limit reached: each buyer may hold or buy at most 1 of One-per-buyer pin.",
    { timeout: 20_000 },
  );
  await page.locator(".hold[data-state=held]").getByRole("button", { name: "Release" }).click();
  await expect(notice(page)).toHaveText("Released One-per-buyer pin; it is back on sale.");

  // The network drops every reservation attempt: the retries (same key each time) give up
  // with a clear message, and nothing was held.
  const keys = [];
  page.on("request", (r) => r.url().endsWith("/api/v1/reservations") && keys.push(r.headers()["idempotency-key"]));
  await page.route("**/api/v1/reservations", (route) => route.abort("internetdisconnected"));
  await reserve.click();
  await expect(notice(page)).toHaveText(
    "Network problem: could not reserve One-per-buyer pin. Check your connection and try again.",
    { timeout: 30_000 },
  );
  expect(keys.length).toBeGreaterThan(1);
  expect(new Set(keys).size).toBe(1);
  expect(await stockOf(request, sku)).toMatchObject({ available: 5, held: 0, sold: 0 });
});

test("a hold survives a reload and is confirmed after it", async ({ page, request }) => {
  const sku = uniqueSku("RELOAD");
  // Limit 1: before the page listed holds, a reload left this buyer 422 with nothing to confirm.
  await putProduct(request, sku, { name: "Reloaded scarf", total_stock: 3, per_buyer_limit: 1 });
  await signIn(page, "buyer-reload");
  const item = card(page, sku);
  await item.getByRole("button", { name: "Reserve" }).click();
  await expect(notice(page)).toContainText("Reserved 1 × Reloaded scarf");
  const id = await page.locator(".hold[data-state=held]").getAttribute("data-reservation");

  await page.reload();
  await expect(page.locator("#who")).toContainText("signed in as buyer-reload");
  const hold = page.locator(`.hold[data-reservation="${id}"]`);
  await expect(hold).toHaveAttribute("data-state", "held");
  await expect(hold).toContainText("1 × Reloaded scarf");
  await expect(hold.locator(".countdown")).toContainText("held for 0:0");
  await hold.getByRole("button", { name: "Confirm order" }).click();
  await expect(notice(page)).toContainText("Order placed: 1 × Reloaded scarf for $15.00");
  await expect(hold).toHaveAttribute("data-state", "confirmed");
  await expect(page.locator("#orders tbody tr[data-status=confirmed]")).toContainText("Reloaded scarf");

  const token = await devToken(request, "buyer-reload");
  const orders = (await ordersOf(request, token)).filter((o) => o.sku === sku);
  expect(orders.map((o) => [o.reservation_id, o.qty, o.status])).toEqual([[id, 1, "confirmed"]]);
  expect(await stockOf(request, sku)).toMatchObject({ available: 2, held: 0, sold: 1 });
});

test("a reserve whose answer was lost is replayed after a reload, not doubled", async ({ page, request }) => {
  const sku = uniqueSku("LOST");
  await putProduct(request, sku, { name: "Lost-answer badge", total_stock: 3, per_buyer_limit: 1 });
  const posts = recordPosts(page);
  await signIn(page, "buyer-lost-answer");
  // The first reserve reaches the shop (the hold is made), its answer never reaches the page.
  let made;
  const firstSent = new Promise((resolve) => {
    page.route("**/api/v1/reservations", async (route) => {
      made = await route.fetch();
      await route.abort("internetdisconnected");
      resolve(route.request().headers()["idempotency-key"]);
    }, { times: 1 });
  });
  await card(page, sku).getByRole("button", { name: "Reserve" }).click();
  const key = await firstSent;
  expect(made.status()).toBe(201);
  const id = (await made.json()).reservation_id;
  // The buyer reloads while the page is still retrying.
  await page.reload();
  const hold = page.locator(`.hold[data-reservation="${id}"]`);
  await expect(hold).toHaveAttribute("data-state", "held");

  // Reserving again carries the first key: the same hold comes back (200), no second one and
  // no purchase_limit refusal.
  await card(page, sku).getByRole("button", { name: "Reserve" }).click();
  await expect(notice(page)).toContainText("Reserved 1 × Lost-answer badge");
  const replay = posts.filter((p) => p.path === "/api/v1/reservations").at(-1);
  expect([replay.key, replay.status]).toEqual([key, 200]);
  await expect(page.locator(".hold")).toHaveCount(1);
  expect(await stockOf(request, sku)).toMatchObject({ available: 2, held: 1 });

  // Answered, the key is spent: the next reserve is a new request (refused by the limit).
  await card(page, sku).getByRole("button", { name: "Reserve" }).click();
  await expect(notice(page)).toHaveText(/Purchase limit reached/);
  expect(posts.at(-1).key).not.toBe(key);
  await hold.getByRole("button", { name: "Release" }).click();
  await expect(notice(page)).toHaveText("Released Lost-answer badge; it is back on sale.");
});

test("a hold that runs out while its confirm is in flight keeps its line until the answer", async ({ page, request }) => {
  const sku = uniqueSku("SLOWOK");
  await putProduct(request, sku, { name: "Slow answer kite", total_stock: 2 });
  await signIn(page, "buyer-slow-answer");
  const reserved = page.waitForResponse((r) => r.url().endsWith("/api/v1/reservations") && r.request().method() === "POST");
  await card(page, sku).getByRole("button", { name: "Reserve" }).click();
  const { reservation_id: id, expires_at: expiresAt } = await (await reserved).json();
  const hold = page.locator(`.hold[data-reservation="${id}"]`);
  await expect(hold).toHaveAttribute("data-state", "held");

  // The confirm reaches the shop in time; its answer reaches the page after the hold's time.
  let answer;
  const answered = new Promise((resolve) => (answer = resolve));
  let deliver;
  const delivered = new Promise((resolve) => (deliver = resolve));
  // Only the confirm (POST) is held back; the page's own GET of "my orders" on the same path
  // goes straight through (held back too, it raced the end of the test and lost its answer).
  await page.route("**/api/v1/orders", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    const response = await route.fetch();
    answer(response.status());
    await delivered;
    await route.fulfill({ response });
  });
  await hold.getByRole("button", { name: "Confirm order" }).click();
  expect(await answered).toBe(201);
  await page.waitForTimeout(Math.max(0, Date.parse(expiresAt) - Date.now()) + 1500);
  await expect(hold).toHaveAttribute("data-state", "confirming");
  await expect(hold.locator(".countdown")).toHaveText("Confirming…");
  await expect(hold.getByRole("button")).toHaveCount(2);

  deliver();
  await expect(hold).toHaveAttribute("data-state", "confirmed");
  await expect(notice(page)).toContainText("Order placed: 1 × Slow answer kite");
  expect(await stockOf(request, sku)).toMatchObject({ held: 0, sold: 1 });
});

test("another tab of the same buyer sees a hold appear and get confirmed", async ({ browser, request }) => {
  const sku = uniqueSku("TABS");
  await putProduct(request, sku, { name: "Two-tab tote", total_stock: 3 });
  const context = await browser.newContext(); // one browser: the tabs share localStorage
  const [first, second] = [await context.newPage(), await context.newPage()];
  await signIn(first, "buyer-tabs");
  await signIn(second, "buyer-tabs");
  await expect(card(second, sku).locator("[data-role=availability]")).toHaveText("3 available");

  await card(first, sku).getByRole("button", { name: "Reserve" }).click();
  await expect(notice(first)).toContainText("Reserved 1 × Two-tab tote");
  const id = await first.locator(".hold[data-state=held]").getAttribute("data-reservation");
  const there = second.locator(`.hold[data-reservation="${id}"]`);
  await expect(there).toHaveAttribute("data-state", "held");

  await there.getByRole("button", { name: "Confirm order" }).click();
  await expect(notice(second)).toContainText("Order placed: 1 × Two-tab tote");
  const here = first.locator(`.hold[data-reservation="${id}"]`);
  await expect(here).toHaveAttribute("data-state", "confirmed");
  await expect(here.getByRole("button")).toHaveCount(0);
  await expect(first.locator("#orders tbody tr[data-status=confirmed]")).toContainText("Two-tab tote");
  await context.close();
});
