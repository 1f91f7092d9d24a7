// Readiness banner: GET /dashboard/readiness (what /readyz knows, as a 200) now and
// then; when playpulse is not ready (a failing processor, an unreadable store or
// lake...), say what, with the server's own words.

const READY_MS = 15000; // between checks while ready
const NOT_READY_MS = 3000; // between checks while not ready

/**
 * The banner text for one readiness answer (`status`: HTTP status, 0 when unreachable;
 * `body`: its JSON or null), or "" when ready. Two answers in a row must agree before
 * the banner changes (see watchHealth), so a processor that is starting does not flash it.
 */
export function readinessText(status, body) {
  if (status === 0) return "playpulse is not reachable: the numbers below are not updated.";
  if (status === 401 || status === 404) return ""; // signed out (the page says so) or old
  const checks = body && body.checks ? body.checks : {};
  if (status === 200 && body && body.status === "degraded") {
    const notes = Object.entries(checks)
      .filter(([, check]) => check && check.ok && check.degraded)
      .map(([name, check]) => `${name}: ${check.degraded}`);
    return `Degraded. ${notes.join(" · ")}`;
  }
  const alerts = body && Array.isArray(body.alerts) ? body.alerts : [];
  const firing = alerts.map((alert) => `${alert.name}: ${alert.summary || "firing"}`);
  if (status === 200 && !(body && body.status === "not_ready")) {
    return firing.length ? `Alert firing. ${firing.join(" · ")}` : "";
  }
  const problems = Object.entries(checks)
    .filter(([, check]) => check && !check.ok)
    .map(([name, check]) => `${name}: ${check.problem || "not ready"}`);
  const what = problems.length ? problems.join(" · ") : `readiness answered ${status}`;
  return `Not ready, the numbers below may be stale. ${what}`;
}

async function check() {
  try {
    const response = await fetch("/dashboard/readiness", {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    const body = await response.json().catch(() => null);
    return readinessText(response.status, body);
  } catch (err) {
    return readinessText(0, null);
  }
}

/** Keep `banner` (hidden by default) showing what readiness says is not ready. */
export function watchHealth(banner) {
  let previous = "";
  async function tick() {
    const text = await check();
    if (text === previous || text === "") {
      banner.textContent = text;
      banner.hidden = text === "";
    }
    previous = text;
    setTimeout(tick, text ? NOT_READY_MS : READY_MS);
  }
  tick();
}
