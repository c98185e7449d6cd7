/*
 * WPS 1.0.0 XML: reading capabilities, descriptions, status documents and outputs, and writing an
 * Execute request. Pure functions on documents; imports nothing.
 */

export const XLINK_NS = "http://www.w3.org/1999/xlink";

export function parseXML(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) throw new Error("the WPS answered with unreadable XML");
  return doc;
}

// WPS 1.0.0 mixes ows:, wps: and unqualified element names: match on the local name only.
export function childrenNamed(node, name) {
  return node ? Array.from(node.children).filter((c) => c.localName === name) : [];
}

export function child(node, name) {
  return childrenNamed(node, name)[0] || null;
}

export function childText(node, name) {
  const found = child(node, name);
  return found ? found.textContent.trim() : "";
}

export function descendants(node, name) {
  return Array.from(node.getElementsByTagNameNS("*", name));
}

export function exceptionText(node) {
  return descendants(node, "ExceptionText").map((e) => e.textContent.trim()).filter(Boolean).join("; ");
}

function parseOccurs(text, fallback) {
  if (text === null) return fallback;
  return text === "unbounded" ? Infinity : Number(text);
}

/** An Input of a ProcessDescription. */
export function parseInput(node) {
  const literal = child(node, "LiteralData");
  const allowed = child(literal, "AllowedValues");
  const range = child(allowed, "Range");
  const uom = child(child(child(literal, "UOMs"), "Default"), "UOM");
  const defaultValue = child(literal, "DefaultValue");
  return {
    id: childText(node, "Identifier"),
    title: childText(node, "Title"),
    abstract: childText(node, "Abstract"),
    minOccurs: parseOccurs(node.getAttribute("minOccurs"), 1),
    maxOccurs: parseOccurs(node.getAttribute("maxOccurs"), 1),
    type: (childText(literal, "DataType") || "string").toLowerCase(),
    values: childrenNamed(allowed, "Value").map((v) => v.textContent.trim()),
    min: range ? childText(range, "MinimumValue") : "",
    max: range ? childText(range, "MaximumValue") : "",
    spacing: range ? childText(range, "Spacing") : "",
    defaultValue: defaultValue ? defaultValue.textContent.trim() : null,
    uom: uom ? uom.textContent.trim() : "",
  };
}

/** The state of a WPS status document (or ExecuteResponse). */
export function readStatus(doc) {
  if (doc.documentElement.localName === "ExceptionReport") {
    return {status: "failed", percent: 0, message: exceptionText(doc)};
  }
  const status = descendants(doc, "Status")[0];
  const node = status && status.firstElementChild;
  if (!node) throw new Error("the status document holds no status");
  const percent = Number(node.getAttribute("percentCompleted") || 0);
  const message = node.textContent.trim();
  switch (node.localName) {
    case "ProcessAccepted":
      return {status: "accepted", percent, message};
    case "ProcessSucceeded":
      return {status: "succeeded", percent: 100, message};
    case "ProcessFailed":
      return {status: "failed", percent, message: exceptionText(node) || message};
    default:  // ProcessStarted, ProcessPaused
      return {status: "running", percent, message};
  }
}

export function readOutputs(doc) {
  return childrenNamed(descendants(doc, "ProcessOutputs")[0] || null, "Output").map((node) => {
    const output = {id: childText(node, "Identifier"), title: childText(node, "Title")};
    const reference = child(node, "Reference");
    if (reference) {
      output.href = reference.getAttribute("href") || reference.getAttributeNS(XLINK_NS, "href") || "";
      output.mimeType = reference.getAttribute("mimeType") || "";
    } else {
      output.value = (child(node, "Data") || node).textContent.trim();
    }
    return output;
  });
}

/** The dataset name of an output: jobs/<id>/<file> for a file, a literal that is one as it is. */
export function outputDataset(output) {
  if (output.href) {
    const path = decodeURIComponent(new URL(output.href, window.location.href).pathname);
    const at = path.lastIndexOf("/outputs/");
    const rest = at >= 0 ? path.slice(at + "/outputs/".length) : "";
    return rest.includes("/") ? `jobs/${rest}` : null;
  }
  return output.value.startsWith("jobs/") ? output.value : null;
}

function xmlText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** An async Execute as a POST XML request: the WPS and the map refuse an Execute by GET with the login
 *  cookie (any site could send one), and a POST from this page carries its Origin. */
export function executeRequest(process, values) {
  const inputs = values.map(([name, value]) => `<wps:Input><ows:Identifier>${xmlText(name)}</ows:Identifier>`
    + `<wps:Data><wps:LiteralData>${xmlText(value)}</wps:LiteralData></wps:Data></wps:Input>`).join("");
  const body = '<?xml version="1.0" encoding="UTF-8"?>'
    + '<wps:Execute service="WPS" version="1.0.0" xmlns:wps="http://www.opengis.net/wps/1.0.0"'
    + ' xmlns:ows="http://www.opengis.net/ows/1.1">'
    + `<ows:Identifier>${xmlText(process)}</ows:Identifier><wps:DataInputs>${inputs}</wps:DataInputs>`
    + '<wps:ResponseForm><wps:ResponseDocument storeExecuteResponse="true" status="true"/></wps:ResponseForm>'
    + "</wps:Execute>";
  return {method: "POST", headers: {"Content-Type": "text/xml; charset=utf-8"}, body};
}
