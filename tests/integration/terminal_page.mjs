// Opens the agent's terminal page in the sandbox browser's headless
// Chromium (connectOverCDP), types a command, and prints what the page shows.
//   node terminal_page.mjs CDP_URL PAGE_URL COMMAND EXPECT
import { chromium } from 'playwright-core';

const [cdpUrl, pageUrl, command, expect] = process.argv.slice(2);
// With auth on, the agent wants its key on the DevTools requests too.
const headers = process.env.SBX_API_KEY ? { 'X-API-Key': process.env.SBX_API_KEY } : undefined;
const browser = await chromium.connectOverCDP(cdpUrl, { timeout: 20000, headers });
const context = browser.contexts()[0] ?? await browser.newContext();
const page = await context.newPage();
await page.goto(pageUrl);
await page.waitForFunction(() => document.getElementById('status').textContent === 'connected');
await page.focus('#screen');
await page.keyboard.type(command);
await page.keyboard.press('Enter');
await page.waitForFunction((e) => document.getElementById('screen').textContent.includes(e),
  expect, { timeout: 10000 });
console.log(JSON.stringify({ screen: await page.textContent('#screen') }));
await page.close();
await browser.close();
