/*! playpulse.js: the playpulse browser SDK. No dependencies, no build step.
 *
 *   <script src="https://YOUR-PLAYPULSE/sdk/playpulse.js"></script>
 *   playpulse.init({ host: "https://YOUR-PLAYPULSE", writeKey: "KEY" });
 *   playpulse.trackMedia(document.querySelector("audio"), { contentId: "book-1" });
 *
 * Events follow playpulse's event model (GET /v1/schema). They are queued, sent in
 * batches with fetch (Authorization: Bearer KEY), retried with backoff, and what is still
 * pending when the page is hidden or left goes with navigator.sendBeacon to
 * /v1/events?key=KEY. No function of this file throws into the page: errors are
 * reported with console.warn (only when init({debug: true})) and otherwise dropped.
 * docs/sdk-js.md documents every option.
 */
(function (root, factory) {
  "use strict";
  var api = factory(root);
  if (typeof module === "object" && module && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.playpulse = api;
  }
})(typeof window !== "undefined" ? window : typeof self !== "undefined" ? self : null, function (win) {
  "use strict";

  var VERSION = "0.1.0";
  var ENDPOINT = "/v1/events";
  var BEACON_MAX_BYTES = 60000; // browsers cap a beacon's body at 64 KiB
  var MAX_QUEUE = 2000; // pending events kept at most (the oldest are dropped)
  var CONTENT_TYPES = { audiobook: 1, track: 1, episode: 1, video: 1 };

  var doc = win && win.document;
  var config = null;
  var queue = [];
  var inFlight = false;
  var flushTimer = null;
  var flushDue = 0;
  var attempt = 0;
  var retryAt = 0;
  var trackers = [];
  var listening = false;

  // --- small helpers ----------------------------------------------------------------

  function warn(message, error) {
    try {
      if (config && config.debug && win && win.console) {
        win.console.warn("playpulse: " + message, error === undefined ? "" : error);
      }
    } catch (ignored) {
      // nothing to do
    }
  }

  function safe(fn) {
    // Wraps a public function or a listener: nothing it raises reaches the page.
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (error) {
        warn("internal error (ignored)", error);
        return undefined;
      }
    };
  }

  function uuid() {
    try {
      if (win.crypto && typeof win.crypto.randomUUID === "function") {
        return win.crypto.randomUUID();
      }
    } catch (ignored) {
      // fall through
    }
    // crypto.randomUUID exists only in secure contexts (https, localhost);
    // getRandomValues everywhere. Math.random is the last resort.
    var bytes = [];
    try {
      bytes = Array.prototype.slice.call(win.crypto.getRandomValues(new Uint8Array(16)));
    } catch (ignored) {
      for (var b = 0; b < 16; b++) bytes.push(Math.floor(Math.random() * 256));
    }
    var hex = "";
    for (var i = 0; i < 16; i++) {
      hex += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return (
      hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-4" + hex.slice(13, 16) + "-a" +
      hex.slice(17, 20) + "-" + hex.slice(20, 32)
    );
  }

  function nowMs() {
    // Milliseconds since the epoch with sub-millisecond precision where available, and
    // monotonic within the page (performance.now never goes back).
    var perf = win && win.performance;
    if (perf && typeof perf.now === "function" && typeof perf.timeOrigin === "number") {
      return perf.timeOrigin + perf.now();
    }
    return Date.now();
  }

  function iso(ms) {
    // "2026-01-31T12:00:00.123456Z": UTC with microseconds (the event model's precision).
    var whole = Math.floor(ms);
    var micros = Math.floor((ms - whole) * 1000);
    var base = new Date(whole).toISOString(); // ...:00.123Z
    return base.slice(0, -1) + String(1000 + micros).slice(1) + "Z";
  }

  function finite(value) {
    return typeof value === "number" && isFinite(value);
  }

  function position(element) {
    var t = element.currentTime;
    return finite(t) && t >= 0 ? Math.round(t * 1000000) / 1000000 : undefined;
  }

  function duration(element) {
    var d = element.duration;
    return finite(d) && d > 0 ? Math.round(d * 1000000) / 1000000 : undefined;
  }

  function rate(element) {
    var r = element.playbackRate;
    return finite(r) && r > 0 && r <= 16 ? r : undefined;
  }

  function foreground() {
    return !doc || doc.visibilityState !== "hidden";
  }

  function timezone() {
    try {
      var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      return typeof zone === "string" && (zone.indexOf("/") > 0 || zone === "UTC") ? zone : undefined;
    } catch (ignored) {
      return undefined;
    }
  }

  function storage() {
    try {
      return win.localStorage || null;
    } catch (ignored) {
      return null; // sandboxed frames, privacy modes
    }
  }

  function anonymousId() {
    var store = storage();
    var key = "playpulse.anonymous_id";
    var id = null;
    try {
      id = store && store.getItem(key);
      if (!id) {
        id = uuid();
        if (store) store.setItem(key, id);
      }
    } catch (ignored) {
      id = id || uuid();
    }
    return id;
  }

  function assign(target, source) {
    if (source) {
      for (var key in source) {
        if (Object.prototype.hasOwnProperty.call(source, key) && source[key] !== undefined) {
          target[key] = source[key];
        }
      }
    }
    return target;
  }

  function option(value, fallback, min, max) {
    // A number option within [min, max]; anything else gives the default.
    return finite(value) && value >= min && value <= max ? value : fallback;
  }

  function trimHost(host) {
    return String(host || "").replace(/\/+$/, "");
  }

  // --- sending ------------------------------------------------------------------------

  function eventsUrl(withKey) {
    var url = config.host + ENDPOINT;
    if (withKey && config.writeKey) {
      url += "?key=" + encodeURIComponent(config.writeKey);
    }
    return url;
  }

  function schedule(delayMs) {
    // A flush in delayMs, unless one is due sooner already.
    if (!config) return;
    var due = Date.now() + Math.max(0, delayMs);
    if (flushTimer !== null) {
      if (flushDue <= due) return;
      win.clearTimeout(flushTimer);
    }
    flushDue = due;
    flushTimer = win.setTimeout(function () {
      flushTimer = null;
      flush();
    }, Math.max(0, delayMs));
  }

  function backoffMs(retryAfterS) {
    if (finite(retryAfterS) && retryAfterS > 0) {
      return Math.min(retryAfterS * 1000, config.maxBackoffMs);
    }
    var base = Math.min(config.minBackoffMs * Math.pow(2, attempt - 1), config.maxBackoffMs);
    return base / 2 + Math.random() * (base / 2); // "equal jitter"
  }

  function defaultSend(events) {
    // POST a batch; resolves to {ok, retry, retryAfterS}. Never rejects.
    var body = JSON.stringify(events);
    var headers = { "Content-Type": "application/json" };
    if (config.writeKey) headers.Authorization = "Bearer " + config.writeKey;
    var init = { method: "POST", headers: headers, body: body, credentials: "omit" };
    if (body.length < BEACON_MAX_BYTES) init.keepalive = true;
    return win.fetch(eventsUrl(false), init).then(
      function (response) {
        var status = response.status;
        if (status >= 200 && status < 300) {
          return response.json().then(
            function (answer) {
              if (answer && answer.rejected) warn("events rejected by the collector", answer);
              return { ok: true };
            },
            function () {
              return { ok: true };
            }
          );
        }
        var retryAfter = parseFloat(response.headers.get("Retry-After") || "");
        var retry = status === 408 || status === 429 || status >= 500;
        warn("the collector answered " + status + (retry ? " (will retry)" : " (dropped)"));
        return { ok: false, retry: retry, retryAfterS: retryAfter };
      },
      function (error) {
        warn("sending failed (will retry)", error);
        return { ok: false, retry: true };
      }
    );
  }

  function defaultBeacon(events) {
    // Sends what is pending with sendBeacon (text/plain, so no CORS preflight), in
    // pieces under the browser's 64 KiB cap; falls back to a keepalive fetch.
    var url = eventsUrl(true);
    var pieces = [];
    var piece = [];
    var size = 2;
    for (var i = 0; i < events.length; i++) {
      var one = JSON.stringify(events[i]);
      if (piece.length && size + one.length + 1 > BEACON_MAX_BYTES) {
        pieces.push(piece);
        piece = [];
        size = 2;
      }
      piece.push(one);
      size += one.length + 1;
    }
    if (piece.length) pieces.push(piece);
    for (var p = 0; p < pieces.length; p++) {
      var body = "[" + pieces[p].join(",") + "]";
      var sent = false;
      try {
        sent = !!(win.navigator && win.navigator.sendBeacon && win.navigator.sendBeacon(url, body));
      } catch (error) {
        sent = false;
      }
      if (!sent) {
        try {
          var headers = { "Content-Type": "text/plain" };
          win.fetch(url, { method: "POST", body: body, keepalive: true, headers: headers, credentials: "omit" })
            .catch(function () {});
        } catch (ignored) {
          // nothing more can be done while the page goes away
        }
      }
    }
  }

  function flush() {
    if (!config || inFlight || !queue.length) return;
    var wait = retryAt - Date.now();
    if (wait > 0) {
      schedule(wait);
      return;
    }
    var batch = queue.splice(0, config.batchSize);
    inFlight = true;
    var sent;
    try {
      sent = Promise.resolve(config.send ? config.send(batch, false) : defaultSend(batch));
    } catch (error) {
      sent = Promise.resolve({ ok: false, retry: true });
    }
    sent
      .then(
        function (result) {
          return result || { ok: true };
        },
        function () {
          return { ok: false, retry: true };
        }
      )
      .then(function (result) {
        inFlight = false;
        if (result.ok) {
          attempt = 0;
          retryAt = 0;
        } else if (result.retry && attempt < config.maxRetries) {
          attempt += 1;
          queue = batch.concat(queue); // in order, first
          retryAt = Date.now() + backoffMs(result.retryAfterS);
        } else {
          attempt = 0;
          retryAt = 0;
          if (result.retry) warn("gave up on " + batch.length + " events after retries");
        }
        if (queue.length) {
          schedule(queue.length >= config.batchSize ? Math.max(0, retryAt - Date.now()) : config.flushIntervalMs);
        }
      })
      .catch(function () {
        inFlight = false;
      });
  }

  function flushWithBeacon() {
    // Everything still queued goes now (the page is being hidden or left).
    if (!config || !queue.length) return;
    var events = queue;
    queue = [];
    if (flushTimer !== null) {
      win.clearTimeout(flushTimer);
      flushTimer = null;
    }
    if (config.send) {
      try {
        config.send(events, true);
      } catch (ignored) {
        // the page is going away
      }
    } else {
      defaultBeacon(events);
    }
  }

  function enqueue(event) {
    queue.push(event);
    if (queue.length > MAX_QUEUE) {
      queue.splice(0, queue.length - MAX_QUEUE);
      warn("queue full: the oldest events were dropped");
    }
    if (queue.length >= config.batchSize) {
      flush();
    } else {
      schedule(config.flushIntervalMs);
    }
  }

  // --- events -------------------------------------------------------------------------

  function context(extra) {
    var ctx = assign({}, config.context);
    ctx.foreground = foreground();
    return assign(ctx, extra);
  }

  function build(eventType, fields) {
    var event = {
      event_id: uuid(),
      event_type: String(eventType),
      occurred_at: iso(nowMs()),
    };
    if (config.userId) event.user_id = config.userId;
    else event.anonymous_id = config.anonymousId;
    if (config.sessionId) event.session_id = config.sessionId;
    assign(event, fields);
    event.context = context(fields && fields.context);
    return event;
  }

  function track(eventType, fields) {
    if (!config) {
      warn("track() before init(): ignored");
      return undefined;
    }
    if (typeof eventType !== "string" || !eventType) {
      warn("track() needs an event type such as 'product_view'");
      return undefined;
    }
    var event = build(eventType, fields);
    enqueue(event);
    return event.event_id;
  }

  // --- media tracking -----------------------------------------------------------------

  function MediaTracker(element, meta) {
    this.element = element;
    this.meta = meta || {};
    this.playbackId = null; // the current play, null when none is open
    this.paused = true;
    this.buffering = false;
    this.seekFrom = null;
    this.heartbeat = null;
    this.anchorPos = 0; // position at anchorAt (ms), for where the playhead was
    this.anchorAt = nowMs();
    this.listeners = [];
    this.attach();
  }

  MediaTracker.prototype.attach = function () {
    var self = this;
    var on = function (type, handler) {
      var wrapped = safe(function (e) {
        handler.call(self, e);
      });
      self.element.addEventListener(type, wrapped);
      self.listeners.push([type, wrapped]);
    };
    on("play", this.onPlay);
    on("playing", this.onPlaying);
    on("pause", this.onPause);
    on("waiting", this.onWaiting);
    on("seeking", this.onSeeking);
    on("seeked", this.onSeeked);
    on("ratechange", this.onRateChange);
    on("ended", this.onEnded);
    on("error", this.onError);
    on("timeupdate", this.onTimeUpdate);
    if (!this.element.paused && !this.element.ended) {
      this.onPlay(); // attached to an element already playing
    }
  };

  MediaTracker.prototype.content = function () {
    var m = this.meta;
    var content = { content_id: String(m.contentId || this.element.currentSrc || "unknown").slice(0, 256) };
    if (m.contentType && CONTENT_TYPES[m.contentType]) content.content_type = m.contentType;
    if (m.title) content.title = String(m.title).slice(0, 512);
    if (m.creator) content.creator = String(m.creator).slice(0, 512);
    if (finite(m.chapter) && m.chapter >= 0) content.chapter = Math.floor(m.chapter);
    if (m.chapterTitle) content.chapter_title = String(m.chapterTitle).slice(0, 512);
    var d = finite(m.durationS) && m.durationS > 0 ? m.durationS : duration(this.element);
    if (d !== undefined) content.duration_s = d;
    return content;
  };

  MediaTracker.prototype.emit = function (eventType, fields, pos) {
    if (!this.playbackId) return;
    var event = { playback_id: this.playbackId, content: this.content() };
    var p = pos === undefined ? position(this.element) : pos;
    if (p !== undefined) event.position_s = p;
    var r = rate(this.element);
    if (r !== undefined) event.playback_rate = r;
    track(eventType, assign(event, fields));
  };

  MediaTracker.prototype.anchor = function () {
    var p = position(this.element);
    this.anchorPos = p === undefined ? 0 : p;
    this.anchorAt = nowMs();
  };

  MediaTracker.prototype.expectedPosition = function () {
    // Where the playhead was just before a seek moved it: the last position seen, moved
    // on by the time played since then (timeupdate only comes every ~250 ms).
    if (this.paused || this.buffering) return this.anchorPos;
    var r = rate(this.element) || 1;
    var p = this.anchorPos + ((nowMs() - this.anchorAt) / 1000) * r;
    var d = duration(this.element);
    return Math.round((d !== undefined ? Math.min(p, d) : p) * 1000000) / 1000000;
  };

  MediaTracker.prototype.startHeartbeat = function () {
    var self = this;
    this.stopHeartbeat();
    this.heartbeat = win.setInterval(
      safe(function () {
        if (self.playbackId && !self.paused && !self.buffering) self.emit("heartbeat");
      }),
      config.heartbeatIntervalMs
    );
  };

  MediaTracker.prototype.stopHeartbeat = function () {
    if (this.heartbeat !== null) {
      win.clearInterval(this.heartbeat);
      this.heartbeat = null;
    }
  };

  MediaTracker.prototype.onPlay = function () {
    if (!this.playbackId) {
      this.playbackId = uuid();
      this.emit("play_start");
    } else if (this.paused) {
      this.emit("resume");
    }
    this.paused = false;
    this.anchor();
    this.startHeartbeat();
  };

  MediaTracker.prototype.onPlaying = function () {
    if (this.buffering) {
      this.buffering = false;
      this.emit("buffer_end");
    }
    this.anchor();
  };

  MediaTracker.prototype.onPause = function () {
    if (this.element.ended || this.paused || !this.playbackId) return; // "ended" follows
    this.paused = true;
    this.stopHeartbeat();
    this.emit("pause");
    this.anchor();
  };

  MediaTracker.prototype.onWaiting = function () {
    if (!this.playbackId || this.paused || this.buffering || this.element.seeking) return;
    this.buffering = true;
    this.emit("buffer_start");
  };

  MediaTracker.prototype.onSeeking = function () {
    // A seek outside a play (before the first play, or play() on an ended element
    // going back to the start) is not one: the play_start tells where playing begins.
    if (this.seekFrom === null && this.playbackId) this.seekFrom = this.expectedPosition();
  };

  MediaTracker.prototype.onSeeked = function () {
    var from = this.seekFrom;
    this.seekFrom = null;
    var to = position(this.element);
    this.anchor();
    if (from === null || to === undefined || !this.playbackId) return;
    this.emit("seek", { from_position_s: Math.max(0, from), position_s: to }, to);
  };

  MediaTracker.prototype.onRateChange = function () {
    if (rate(this.element) !== undefined) this.emit("speed_change");
    this.anchor();
  };

  MediaTracker.prototype.onTimeUpdate = function () {
    if (!this.element.seeking) this.anchor();
  };

  MediaTracker.prototype.onEnded = function () {
    this.end("completed");
  };

  MediaTracker.prototype.onError = function () {
    var error = this.element.error;
    var fields = {};
    if (error) {
      fields.error_code = "MEDIA_ERR_" + String(error.code);
      if (error.message) fields.error_message = String(error.message).slice(0, 1024);
    }
    this.emit("error", fields);
    this.close();
  };

  MediaTracker.prototype.onVisibility = function () {
    // Any open play, playing or paused, learns the new foreground state.
    this.emit("visibility_change");
  };

  MediaTracker.prototype.close = function () {
    this.stopHeartbeat();
    this.playbackId = null;
    this.paused = true;
    this.buffering = false;
  };

  MediaTracker.prototype.end = function (reason) {
    if (this.playbackId) this.emit("play_end", { reason: reason });
    this.close();
  };

  MediaTracker.prototype.update = function (meta) {
    // New content in the same element (a playlist's next item, a single-page app's
    // next video): the open play ends ("next") and, if the element plays, a new one
    // starts with the new metadata.
    this.end("next");
    this.meta = meta || {};
    if (!this.element.paused && !this.element.ended) this.onPlay();
  };

  MediaTracker.prototype.detach = function () {
    this.end("stopped");
    for (var i = 0; i < this.listeners.length; i++) {
      this.element.removeEventListener(this.listeners[i][0], this.listeners[i][1]);
    }
    this.listeners = [];
    var index = trackers.indexOf(this);
    if (index >= 0) trackers.splice(index, 1);
  };

  function publicTracker(tracker) {
    return {
      /** The open play's playback_id, or null. */
      playbackId: function () {
        return tracker.playbackId;
      },
      /** Corrects the metadata of the open play (a title that loaded late). */
      describe: safe(function (meta) {
        tracker.meta = meta || {};
      }),
      /** New metadata: ends the open play ("next") and starts another if playing. */
      update: safe(function (meta) {
        tracker.update(meta);
      }),
      /** Stops following the element; an open play ends ("stopped"). */
      detach: safe(function () {
        tracker.detach();
      }),
    };
  }

  function trackMedia(element, meta) {
    if (!config) {
      warn("trackMedia() before init(): ignored");
      return null;
    }
    if (!element || typeof element.addEventListener !== "function" || !("currentTime" in element)) {
      warn("trackMedia() needs an <audio> or <video> element");
      return null;
    }
    for (var i = 0; i < trackers.length; i++) {
      if (trackers[i].element === element) {
        trackers[i].meta = meta || {};
        return publicTracker(trackers[i]);
      }
    }
    var tracker = new MediaTracker(element, meta);
    trackers.push(tracker);
    return publicTracker(tracker);
  }

  // --- page lifecycle -----------------------------------------------------------------

  function onVisibilityChange() {
    for (var i = 0; i < trackers.length; i++) trackers[i].onVisibility();
    if (doc.visibilityState === "hidden") flushWithBeacon();
  }

  function onPageHide() {
    // The page goes away (navigation, tab closed, bfcache): open plays end, everything
    // pending goes with sendBeacon.
    for (var i = 0; i < trackers.length; i++) trackers[i].end("stopped");
    flushWithBeacon();
  }

  function listen() {
    if (listening || !win || typeof win.addEventListener !== "function") return;
    listening = true;
    if (doc) doc.addEventListener("visibilitychange", safe(onVisibilityChange));
    win.addEventListener("pagehide", safe(onPageHide));
  }

  function init(options) {
    var o = options || {};
    var host = o.host !== undefined ? o.host : win && win.location ? win.location.origin : "";
    config = {
      host: trimHost(host),
      writeKey: o.writeKey || null,
      userId: o.userId || null,
      anonymousId: o.anonymousId || anonymousId(),
      sessionId: o.sessionId || uuid(),
      context: assign({ device_type: "web", platform: "web", timezone: timezone() }, o.context),
      batchSize: Math.floor(option(o.batchSize, 20, 1, 500)),
      flushIntervalMs: option(o.flushIntervalMs, 2000, 0, 86400000),
      heartbeatIntervalMs: option(o.heartbeatIntervalMs, 10000, 100, 3600000),
      minBackoffMs: option(o.minBackoffMs, 1000, 10, 3600000),
      maxBackoffMs: option(o.maxBackoffMs, 60000, 10, 3600000),
      maxRetries: Math.floor(option(o.maxRetries, 10, 0, 1000)),
      send: typeof o.send === "function" ? o.send : null,
      debug: !!o.debug,
    };
    listen();
    return true;
  }

  return {
    version: VERSION,
    init: safe(init),
    track: safe(track),
    trackMedia: safe(trackMedia),
    /** Sets the signed-in user's id (null: back to the anonymous id). */
    identify: safe(function (userId) {
      if (config) config.userId = userId ? String(userId) : null;
    }),
    /** Sends what is queued now (fetch); returns nothing. */
    flush: safe(function () {
      if (flushTimer !== null) {
        win.clearTimeout(flushTimer);
        flushTimer = null;
      }
      flush();
    }),
    /** Number of events waiting to be sent (for tests and debugging). */
    pending: safe(function () {
      return queue.length;
    }),
  };
});
