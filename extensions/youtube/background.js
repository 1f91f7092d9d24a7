// The extension's service worker: the only part that sends anything, and only to the
// collector URL set on the options page (chrome.storage.local). Content scripts hand it
// batches of events; fetching from here is not subject to youtube.com's CORS, and it
// finishes even when the tab that sent the batch is already gone.
"use strict";

const DEFAULTS = { collectorUrl: "", writeKey: "" };

async function deliver(events) {
  const { collectorUrl, writeKey } = await chrome.storage.local.get(DEFAULTS);
  if (!collectorUrl) {
    return { ok: false, retry: false };
  }
  const headers = { "Content-Type": "application/json" };
  if (writeKey) {
    headers.Authorization = "Bearer " + writeKey;
  }
  try {
    const response = await fetch(collectorUrl.replace(/\/+$/, "") + "/v1/events", {
      method: "POST",
      headers,
      body: JSON.stringify(events),
      credentials: "omit",
    });
    if (response.ok) {
      return { ok: true };
    }
    const retry = response.status === 408 || response.status === 429 || response.status >= 500;
    const retryAfterS = parseFloat(response.headers.get("Retry-After") || "");
    return { ok: false, retry, retryAfterS };
  } catch (error) {
    return { ok: false, retry: true };
  }
}

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id || !message || message.type !== "playpulse.events") {
    return false;
  }
  if (!Array.isArray(message.events) || message.events.length === 0) {
    sendResponse({ ok: true });
    return false;
  }
  deliver(message.events).then(sendResponse);
  return true; // sendResponse is called later
});
