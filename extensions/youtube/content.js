// Content script on www.youtube.com: follows the watch page's <video> with playpulse.js
// (loaded before this file) and hands the events to the service worker, which sends
// them to the configured collector. Nothing happens until the options page has a
// collector URL.
"use strict";

(function () {
  const state = { tracker: null, videoId: null, video: null, configured: false };
  // For tests and debugging: this is the content script's isolated world, which the
  // page's own scripts cannot see.
  globalThis.playpulseYouTube = state;

  function send(events, beacon) {
    const message = { type: "playpulse.events", events };
    let reply;
    try {
      reply = chrome.runtime.sendMessage(message);
    } catch (error) {
      // The extension was reloaded or removed: this page's script is orphaned.
      return Promise.resolve({ ok: false, retry: false });
    }
    if (beacon) {
      return Promise.resolve({ ok: true }); // the worker sends it; the page is going away
    }
    return Promise.resolve(reply).then(
      (answer) => answer || { ok: false, retry: true },
      () => ({ ok: false, retry: true })
    );
  }

  function videoIdOf(url) {
    const u = new URL(url);
    if (u.pathname !== "/watch") {
      return null;
    }
    return u.searchParams.get("v");
  }

  function text(selectors) {
    for (const selector of selectors) {
      const node = document.querySelector(selector);
      const value = node && (node.textContent || node.getAttribute("content") || "").trim();
      if (value) {
        return value;
      }
    }
    return undefined;
  }

  function describe(videoId) {
    const title =
      text([
        "ytd-watch-metadata h1 yt-formatted-string",
        "ytd-watch-metadata #title h1",
        "#title h1 yt-formatted-string",
        "h1.title",
        'meta[name="title"]',
      ]) || (document.title || "").replace(/ - YouTube$/, "") || undefined;
    const channel = text([
      "ytd-watch-metadata ytd-channel-name a",
      "#owner ytd-channel-name a",
      "ytd-video-owner-renderer ytd-channel-name a",
      "#upload-info #channel-name a",
      'span[itemprop="author"] link[itemprop="name"]',
    ]);
    return { contentId: "youtube:" + videoId, contentType: "video", title, creator: channel };
  }

  function findVideo() {
    return (
      document.querySelector("#movie_player video.html5-main-video") ||
      document.querySelector("#movie_player video") ||
      document.querySelector("video")
    );
  }

  function check() {
    const videoId = videoIdOf(location.href);
    if (!videoId) {
      if (state.tracker) {
        state.tracker.detach(); // left the watch page (the SPA navigated away)
        state.tracker = null;
        state.video = null;
      }
      state.videoId = null;
      return;
    }
    const video = findVideo();
    if (!video) {
      return;
    }
    const meta = describe(videoId);
    if (state.tracker && state.video !== video) {
      state.tracker.detach();
      state.tracker = null;
    }
    if (!state.tracker) {
      state.tracker = playpulse.trackMedia(video, meta);
      state.video = video;
    } else if (videoId !== state.videoId) {
      state.tracker.update(meta); // the next video in the same player
    } else {
      state.tracker.describe(meta); // title and channel may render after the video
    }
    state.videoId = videoId;
  }

  chrome.storage.local.get({ collectorUrl: "", userId: "", anonymousId: "" }).then((settings) => {
    if (!settings.collectorUrl) {
      return; // not configured: nothing is tracked, nothing is sent
    }
    // The anonymous id lives in the extension's storage, not in youtube.com's.
    let anonymousId = settings.anonymousId;
    if (!anonymousId) {
      // (crypto.randomUUID exists only in secure contexts; getRandomValues everywhere)
      anonymousId = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
        b.toString(16).padStart(2, "0")
      ).join("");
      chrome.storage.local.set({ anonymousId });
    }
    playpulse.init({
      host: settings.collectorUrl,
      userId: settings.userId || undefined,
      anonymousId,
      send,
      context: { platform: "youtube" },
    });
    state.configured = true;
    check();
    // YouTube navigates without loading pages: follow its event, and look again every
    // second for what it renders late.
    document.addEventListener("yt-navigate-finish", check);
    setInterval(check, 1000);
  });
})();
