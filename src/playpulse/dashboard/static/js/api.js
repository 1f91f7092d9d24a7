// Read API client: GET JSON from this origin (the read-key cookie travels by itself).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

/** GET `path` with the non-empty `params` as query string; resolves to the JSON body. */
export async function getJSON(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, `playpulse is not reachable (${err.message})`);
  }
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "a read key is required");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

/** Rows of catalog query `name` (GET /v1/metrics/{name}). */
export async function metric(name, params) {
  const body = await getJSON(`/v1/metrics/${encodeURIComponent(name)}`, params);
  return body.rows;
}

/** Rows of the session length histogram (GET /v1/sessions/histogram). */
export async function sessionHistogram(params) {
  const { from, to, tz } = params;
  const body = await getJSON("/v1/sessions/histogram", { from, to, tz });
  return body.rows;
}
