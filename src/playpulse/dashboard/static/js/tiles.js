// KPI tiles with the previous period's figure beside each (compare.js).

import { change, previousNote } from "./compare.js";

/**
 * Fill `container` with one tile per item: `{key, label, value, format, kind, better}`
 * where `value` is this period's figure (null: unknown), `format` turns a figure into
 * text, `kind` is "share" for rates (compared in percentage points) and `better` says
 * which way is good ("up", "down", or "" when neither). `previous` is the previous
 * period's row (null: no comparison) and `window` its window. Each tile carries
 * `data-kpi`, `data-value` and, when compared, a `.delta` with `data-direction`,
 * `data-good` and the previous figure in its title.
 */
export function tiles(container, items, previous = null, window = null) {
  container.replaceChildren(...items.map((item) => {
    const box = document.createElement("div");
    box.className = "kpi";
    box.dataset.kpi = item.key;
    box.dataset.value = item.value === null || item.value === undefined ? "" : String(item.value);
    const name = document.createElement("span");
    name.textContent = item.label;
    const strong = document.createElement("strong");
    strong.textContent = item.format(item.value);
    box.append(name, strong);
    if (previous) {
      const before = previous[item.key];
      const moved = change(item.value, before, item.kind);
      const delta = document.createElement("em");
      delta.className = "delta";
      if (moved) {
        delta.textContent = `${moved.direction === "up" ? "▲" : moved.direction === "down" ? "▼" : "■"} ${moved.text}`;
        delta.dataset.direction = moved.direction;
        if (item.better && moved.direction !== "flat") {
          delta.dataset.good = String(moved.direction === item.better);
        }
      } else {
        delta.textContent = "–";
        delta.dataset.direction = "unknown";
      }
      delta.title = previousNote(item.format(before), window);
      delta.setAttribute("aria-label", `${delta.textContent}; ${delta.title}`);
      box.append(delta);
    }
    return box;
  }));
}
