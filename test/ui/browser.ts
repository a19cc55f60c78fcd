import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * Headless Chromium for browser tests: Debian's chromium (scripts/install-system-deps.sh), driven
 * by playwright-core, whose own browser download needs the internet. The flags keep Chromium
 * from reaching out anywhere (updates, sync, background fetches).
 */
export const CHROMIUM_PATH = process.env.FANOUT_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** A browser and one page at the dashboard's size; console errors and uncaught page errors are pushed to `errors`. */
export async function openBrowserPage(errors: string[]): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('console', (message) => void (message.type() === 'error' && errors.push(message.text())));
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  return { browser, page };
}
