// Playwright drives Debian's chromium (never a downloaded browser) against the stockgate
// that scripts/browser-tests.sh started: BASE_URL names it, CHROMIUM the browser binary.
const { defineConfig } = require("@playwright/test");

if (!process.env.BASE_URL) {
  throw new Error("BASE_URL is not set: run the browser tests through scripts/browser-tests.sh");
}

module.exports = defineConfig({
  testDir: "./tests",
  // One browser at a time: the machine is small and the tests share one server.
  workers: 1,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  reporter: [["list"]],
  forbidOnly: true,
  use: {
    baseURL: process.env.BASE_URL,
    browserName: "chromium",
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    },
    viewport: { width: 1200, height: 800 },
  },
});
