/*
 * A job's outputs as a table: files as links through the proxy (rasters with "Show on map"),
 * literals as text. Used by the Processes panel and the Jobs panel.
 */
import {viaProxy} from "./api.js";
import {showJobLayer} from "./layers.js";
import {el, fileName, formatLiteral} from "./util.js";
import {outputDataset} from "./wps.js";

export function renderOutputs(container, job, outputs) {
  container.replaceChildren(
    el("h3", {}, `Outputs of ${job.process}`, job.id ? el("code", {class: "muted"}, ` ${job.id}`) : null),
    el("table", {class: "table outputs", "data-job": job.id || ""}, el("tbody", {}, ...outputs.map(outputRow))));
}

function outputRow(output) {
  const value = el("td", {});
  if (output.href) {
    value.append(el("a", {href: viaProxy(output.href), target: "_blank", rel: "noopener"}, fileName(output.href)));
    const dataset = outputDataset(output);
    if (dataset && /tiff/i.test(output.mimeType)) {
      value.append(" ", el("button", {type: "button", class: "small", "data-show-layer": dataset,
        on: {click: () => showJobLayer(dataset)}}, "Show on map"));
    }
  } else {
    value.textContent = formatLiteral(output.value);
    if (value.textContent !== String(output.value ?? "")) value.title = String(output.value);  // the full figure
  }
  const row = el("tr", {"data-output": output.id}, el("th", {scope: "row", title: output.title}, output.id), value);
  if (output.id === "compatible" && output.value === "not compatible") row.classList.add("not-compatible");
  return row;
}
