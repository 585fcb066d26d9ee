// Playwright's connectOverCDP through sbx-agent: opens url in the sandbox's
// browser and writes a PNG screenshot of it.
//   node cdp_screenshot.mjs CDP_URL PAGE_URL OUT.png
import { chromium } from 'playwright-core';

const [cdpUrl, pageUrl, out] = process.argv.slice(2);
// With auth on, the agent wants its key on the DevTools requests too.
const headers = process.env.SBX_API_KEY ? { 'X-API-Key': process.env.SBX_API_KEY } : undefined;
const browser = await chromium.connectOverCDP(cdpUrl, { timeout: 20000, headers });
const context = browser.contexts()[0] ?? await browser.newContext();
const page = await context.newPage();
await page.goto(pageUrl);
const title = await page.title();
await page.screenshot({ path: out });
await page.close();
await browser.close();
console.log(JSON.stringify({ title }));
