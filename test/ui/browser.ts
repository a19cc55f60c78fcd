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
