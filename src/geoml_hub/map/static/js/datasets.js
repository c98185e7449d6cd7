/*
 * What the forms offer: the datalist of dataset names (layers, workspace files, outputs of
 * succeeded jobs) and the recent values that processes chain from (state.recent).
 */
import {state} from "./state.js";
import {$, el} from "./util.js";
import {outputDataset} from "./wps.js";

/** Records values of a source for the chain: a process's last succeeded job, or "map" (merged). */
export function remember(source, values) {
  state.recent[source] = source === "map" ? {...state.recent.map, ...values} : values;
}

/** The datalist of dataset inputs: layers, workspace files, outputs of succeeded jobs. */
export function updateDatasets() {
  const options = new Map();
  for (const [dataset, entry] of state.layers) options.set(dataset, `${entry.info.kind}: ${entry.info.name}`);
  for (const dataset of state.workspaceDatasets) options.set(dataset, "workspace file");
  for (const list of state.jobDatasets.values()) {
    for (const {dataset, label} of list || []) options.set(dataset, label);
  }
  $("#datasets").replaceChildren(...[...options].map(([value, label]) => el("option", {value, label})));
}

/** Makes a succeeded job the source of the chain for its process; its dataset outputs join the datalist. */
export function rememberJob(job, outputs) {
  const values = {...job.inputs};
  const datasets = [];
  for (const output of outputs) {
    const dataset = outputDataset(output);
    values[output.id] = dataset || output.value || output.href;
    if (dataset) datasets.push({dataset, label: `${job.process} ${output.id}`});
  }
  remember(job.process, values);
  state.jobDatasets.set(job.id, datasets);
  updateDatasets();
}
