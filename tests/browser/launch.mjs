// Headless Chromium as this machine runs it: Debian's build, no sandbox (root), no GPU, and no
// background networking (the machine has no network but the registries).
import { chromium } from "playwright-core";

export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}
