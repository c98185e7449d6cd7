/*
 * HTTP: fetch with readable errors, JSON and WPS XML answers, and WPS URLs through the map's proxy.
 * Every URL is relative to the page (the service lives under a prefix such as /services/map/).
 */
import {state} from "./state.js";
import {exceptionText, parseXML} from "./wps.js";

/** The readable reason of a failed response: an ExceptionReport's text, a JSON error, or the status. */
async function errorText(resp, url) {
  const text = (await resp.text()).trim();
  let detail = "";
  if (text.startsWith("<")) {
    try {
      detail = exceptionText(parseXML(text));
    } catch (err) {
      detail = "";  // an HTML error page: the status says enough
    }
  } else if (text) {
    try {
      const data = JSON.parse(text);
      detail = data.error || data.message || "";
    } catch (err) {
      detail = text.slice(0, 300);
    }
  }
  const hint = resp.status === 401 ? "; reload the page to log in again" : "";
  return `${detail || resp.statusText || "request failed"} (HTTP ${resp.status} from ${url.split("?")[0]}${hint})`;
}

export async function request(url, options = {}) {
  let resp;
  try {
    resp = await fetch(url, options);
  } catch (err) {
    throw new Error(`${url}: ${err.message}`);
  }
  if (!resp.ok) throw new Error(await errorText(resp, url));
  return resp;
}

export async function getJSON(url, options = {}) {
  const resp = await request(url, options);
  const text = await resp.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${url.split("?")[0]}: the answer is not JSON (has the login expired? reload the page)`);
  }
}

/** A WPS XML document; an ExceptionReport becomes an error with its text. */
export async function getXML(url, options = {}) {
  const resp = await request(url, {cache: "no-store", ...options});
  const doc = parseXML(await resp.text());
  if (doc.documentElement.localName === "ExceptionReport") {
    throw new Error(exceptionText(doc) || "the WPS refused the request");
  }
  return doc;
}

/** A URL of the WPS (status document, output file) as the same URL through this service's proxy. */
export function viaProxy(url) {
  const base = state.config.wps_url.replace(/\/+$/, "");
  return url.startsWith(`${base}/`) ? `api/wps${url.slice(base.length)}` : url;
}
