"use strict";

const FIELDS = ["collectorUrl", "writeKey", "userId"];
const status = document.getElementById("status");

function originPattern(url) {
  const u = new URL(url);
  return u.protocol + "//" + u.hostname + "/*";
}

async function load() {
  const values = await chrome.storage.local.get({ collectorUrl: "", writeKey: "", userId: "" });
  for (const name of FIELDS) {
    document.getElementById(name).value = values[name];
  }
}

async function save(event) {
  event.preventDefault();
  const values = {};
  for (const name of FIELDS) {
    values[name] = document.getElementById(name).value.trim();
  }
  if (values.collectorUrl) {
    let url;
    try {
      url = new URL(values.collectorUrl);
    } catch (error) {
      status.textContent = "The collector URL is not a URL.";
      return;
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      status.textContent = "The collector URL must start with https:// or http://.";
      return;
    }
    values.collectorUrl = url.origin + url.pathname.replace(/\/+$/, "");
    // The extension may only send to the collector's host once you allow it (localhost
    // and 127.0.0.1 are allowed at install, for a local playpulse up).
    const origins = [originPattern(values.collectorUrl)];
    if (!(await chrome.permissions.contains({ origins }))) {
      const granted = await chrome.permissions.request({ origins });
      if (!granted) {
        status.textContent = "Not saved: the extension needs permission to reach the collector.";
        return;
      }
    }
  }
  await chrome.storage.local.set(values);
  status.textContent = "Saved. Reload YouTube tabs to apply.";
}

document.getElementById("options").addEventListener("submit", save);
load();
