/*
 * The Quality control panel: overall accuracy, kappa, the per-class table, heatmap, accuracy by
 * confidence and report of a validate_classification or evaluate_model job.
 */
import {getJSON, viaProxy} from "./api.js";
import {$, el, formatFraction, report} from "./util.js";

/** A figure as shown: fractions to 3 decimals (0.9628252788104089 -> 0.963), counts as they are. */
export function roundFigure(value) {
  const n = Number(value);
  if (value === "" || value === null || value === undefined || Number.isNaN(n)) return value || "";
  return Number.isInteger(n) ? String(n) : n.toFixed(3);
}

function setFigure(selector, value) {
  const node = $(selector);
  node.textContent = roundFigure(value);
  node.dataset.value = value;  // the exact value, also as the tooltip
  node.title = value || "";
}

/** Fills the QC panel; resolves once the per-class table is there too. */
export async function showQC(job, outputs) {
  const byId = new Map(outputs.map((o) => [o.id, o]));
  const literal = (id) => (byId.has(id) && byId.get(id).value) || "";
  const link = (id) => (byId.has(id) && byId.get(id).href ? viaProxy(byId.get(id).href) : "");
  setFigure("#qc-oa", literal("overall_accuracy"));
  setFigure("#qc-kappa", literal("kappa"));
  setFigure("#qc-n", literal("n"));
  $("#qc-process").textContent = job.process;
  $("#qc-job").textContent = job.id || "";
  const heatmap = $("#qc-heatmap");
  heatmap.hidden = !link("heatmap");
  if (link("heatmap")) heatmap.src = link("heatmap");
  const reliability = $("#qc-reliability");  // validate_classification with a confidence raster
  reliability.hidden = !link("reliability");
  if (link("reliability")) reliability.src = link("reliability");
  const reportLink = $("#qc-report");
  reportLink.hidden = !link("report");
  if (link("report")) reportLink.href = link("report");
  $("#qc-table tbody").replaceChildren();
  $("#qc-empty").hidden = true;
  $("#qc-result").hidden = false;
  if (link("summary")) await loadQCSummary(link("summary"), job.id || "");
}

async function loadQCSummary(url, jobId) {
  let summary;
  try {
    summary = await getJSON(url, {cache: "no-store"});
  } catch (err) {
    report(err);
    return;
  }
  if ($("#qc-job").textContent !== jobId) return;  // a newer result took the panel
  const classes = summary.classes || Object.keys(summary.ppv || {});
  $("#qc-table tbody").replaceChildren(...classes.map((name) => el("tr", {"data-class": name},
    el("th", {scope: "row"}, name),
    ...["ppv", "tpr", "f1"].map((key) => el("td", {"data-metric": key}, formatFraction((summary[key] || {})[name]))))));
}
