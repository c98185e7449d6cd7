/*
 * DOM and text helpers, and the message bar. Imports nothing.
 *
 * Text from the server is put into the page with textContent only (escapeHTML serves the one
 * place that takes HTML: Leaflet's attribution).
 */

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/**
 * A new element. attrs are attributes (null, undefined and false leave one out, true sets it
 * empty), except `on`: {event: handler}. Children are nodes or strings (inserted as text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

let idCounter = 0;
export function uniqueId(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Text as HTML, for the one place that takes HTML: Leaflet's attribution. */
export function escapeHTML(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

export function showMessage(text, kind = "error") {
  $("#message-text").textContent = text;
  $("#message").dataset.kind = kind;
  $("#message").hidden = false;
}

export function clearMessage() {
  $("#message").hidden = true;
}

export function report(err) {
  console.error(err);
  showMessage(err && err.message ? err.message : String(err));
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatFraction(value) {
  return value === null || value === undefined || Number.isNaN(Number(value)) ? "—" : Number(value).toFixed(3);
}

/* A literal output as people read it: a fractional number to 3 decimals (0.9628252788104089 → 0.963),
 * anything else (text, integers) as it is. */
export function formatLiteral(value) {
  if (value === null || value === undefined) return "";
  const text = String(value).trim();
  if (!/^[-+]?\d*\.\d+(e[-+]?\d+)?$/i.test(text)) return text;
  const n = Number(text);
  return Number.isInteger(n) ? String(n) : n.toFixed(3);
}

export function fileName(url) {
  return decodeURIComponent(new URL(url, window.location.href).pathname.split("/").pop());
}
