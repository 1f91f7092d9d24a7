// Quality of experience (what Mux Data shows first): startup time, rebuffering and
// playback failures of the player plays (docs/metrics.md, "Quality of experience").

import * as fmt from "./format.js";
import { tiles } from "./tiles.js";

/** Startup time: milliseconds below 10 s ("850 ms", "2.4 s"). */
export function startup(seconds) {
  if (seconds === null || seconds === undefined) return fmt.UNKNOWN;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return fmt.duration(seconds);
}

const perHour = (v) => (v === null || v === undefined ? fmt.UNKNOWN : `${new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 }).format(v)} / h`);

/** The QoE tiles for a `qoe` row (`previous`: the previous period's, or null). */
export function qoeTiles(container, row, previous, window) {
  tiles(container, [
    { key: "plays", label: "Player plays", value: row.plays, format: fmt.count, better: "" },
    { key: "startup_p50_s", label: "Startup time (median)", value: row.startup_p50_s, format: startup, better: "down" },
    { key: "startup_p95_s", label: "Startup time (p95)", value: row.startup_p95_s, format: startup, better: "down" },
    { key: "rebuffer_ratio", label: "Rebuffering", value: row.rebuffer_ratio, format: fmt.percent, kind: "share", better: "down" },
    { key: "rebuffers_per_hour", label: "Rebuffers per hour", value: row.rebuffers_per_hour, format: perHour, better: "down" },
    { key: "failure_rate", label: "Playback failures", value: row.failure_rate, format: fmt.percent, kind: "share", better: "down" },
  ], previous, window);
}

function cell(text, numeric) {
  const td = document.createElement("td");
  if (numeric) td.className = "num";
  td.append(text);
  return td;
}

const QOE_CELLS = (r) => [
  fmt.count(r.plays), startup(r.startup_p50_s), startup(r.startup_p95_s),
  fmt.percent(r.rebuffer_ratio), perHour(r.rebuffers_per_hour), fmt.percent(r.failure_rate),
];

/** The per-title table (rows of `qoe_titles`); a title links to its page (`href(id)`). */
export function qoeTitlesTable(body, rows, href, label) {
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const link = document.createElement("a");
    link.href = href(r.content_id);
    link.textContent = label(r);
    tr.append(cell(link, false), ...QOE_CELLS(r).map((v) => cell(v, true)));
    return tr;
  }));
}

/** The per-device table (rows of `qoe_devices`); a click on a row calls `pick(row)`
 * (the dashboard then filters by that device type and platform). */
export function qoeDevicesTable(body, rows, pick) {
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.className = "pickable";
    tr.tabIndex = 0;
    tr.dataset.deviceType = r.device_type;
    tr.dataset.platform = r.platform;
    tr.title = `Show only ${r.device_type} on ${r.platform}`;
    tr.addEventListener("click", () => pick(r));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(r); });
    tr.append(cell(r.platform, false), cell(r.device_type, false), ...QOE_CELLS(r).map((v) => cell(v, true)));
    return tr;
  }));
}
