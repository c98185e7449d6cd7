/*
 * The Jobs panel: the user's jobs (cancel, publish, outputs), the shared results of every user,
 * and the outputs of succeeded jobs offered as datasets in the forms.
 */
import {getJSON, getXML, request, viaProxy} from "./api.js";
import {rememberJob, updateDatasets} from "./datasets.js";
import {renderOutputs} from "./outputs.js";
import {showQC} from "./qc.js";
import {QC_PROCESSES} from "./registry.js";
import {state} from "./state.js";
import {$, el, formatTime, report} from "./util.js";
import {outputDataset, readOutputs, readStatus} from "./wps.js";

const ACTIVE_JOB_STATES = new Set(["queued", "running"]);
/** Finished jobs whose status documents are read to offer their outputs as datasets. */
const MAX_JOBS_FOR_DATASETS = 20;

/** The list last shown (as JSON), and whether a refresh is in flight or wanted once it ends. */
const shown = {json: "", busy: false, again: false};

export async function refreshJobs() {
  if (shown.busy) {
    shown.again = true;  // the list in flight may predate what the caller changed
    return;
  }
  shown.busy = true;
  const status = $("#jobs-status");
  try {
    const data = await getJSON("api/wps/jobs", {cache: "no-store"});
    const jobs = [...data.jobs].sort((a, b) => String(b.created || "").localeCompare(String(a.created || "")));
    const text = JSON.stringify(jobs);
    if (text !== shown.json) {
      shown.json = text;
      renderJobs(jobs);
    }
    status.hidden = true;
    loadJobDatasets(jobs);
  } catch (err) {
    status.textContent = `Cannot list jobs: ${err.message}`;
    status.hidden = false;
  } finally {
    shown.busy = false;
  }
  if (shown.again) {
    shown.again = false;
    await refreshJobs();
  }
}

function renderJobs(jobs) {
  const rows = jobs.map(jobRow);
  if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: 6, class: "muted"}, "No jobs yet.")));
  $("#jobs-list tbody").replaceChildren(...rows);
}

function actionButton(action, text, handler) {
  return el("button", {type: "button", class: "small", "data-action": action, on: {click: handler}}, text);
}

function jobRow(job) {
  const actions = el("td", {class: "actions"});
  if (ACTIVE_JOB_STATES.has(job.status)) actions.append(actionButton("cancel", "Cancel", () => jobAction(job, "cancel")));
  if (job.status === "succeeded" && !job.published) {
    actions.append(actionButton("publish", "Publish", () => jobAction(job, "publish")));
  }
  if (job.status_location) actions.append(actionButton("outputs", "Outputs", () => showListedOutputs(job)));
  const owner = state.config.admin && job.owner ? ` (${job.owner})` : "";
  return el("tr", {"data-job": job.job_id, "data-status": job.status},
    el("td", {title: job.job_id}, job.process, owner),
    el("td", {title: job.message || ""}, job.status),
    el("td", {}, job.percent === null || job.percent === undefined ? "" : String(Math.round(job.percent))),
    el("td", {}, formatTime(job.created)),
    el("td", {title: job.published ? `results/${job.owner}/${job.job_id}` : ""}, job.published ? "yes" : "no"),
    actions);
}

async function jobAction(job, action) {
  try {
    await request(`api/wps/jobs/${encodeURIComponent(job.job_id)}/${action}`, {method: "POST"});
  } catch (err) {
    report(err);
  }
  refreshJobs();
  if (action === "publish") refreshResults();
}

/** Lists the shared results (published jobs of every user) with a button for their outputs. */
export async function refreshResults() {
  try {
    const data = await getJSON("api/wps/results", {cache: "no-store"});
    const rows = data.results.map((job) => el("tr", {"data-result": job.job_id},
      el("td", {title: job.shared_as}, job.process),
      el("td", {}, job.owner),
      el("td", {}, formatTime(job.finished)),
      el("td", {class: "actions"},
        job.status_location ? actionButton("outputs", "Outputs", () => showListedOutputs(job)) : "")));
    if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: 4, class: "muted"}, "Nothing published yet.")));
    $("#results-list tbody").replaceChildren(...rows);
  } catch (err) {
    $("#results-list tbody").replaceChildren(
      el("tr", {}, el("td", {colspan: 4, class: "muted"}, `Cannot list shared results: ${err.message}`)));
  }
}

/** Loads a listed job's status document and shows its outputs (and QC) in the jobs panel. */
async function showListedOutputs(job) {
  const box = $("#jobs-output");
  try {
    const doc = await getXML(viaProxy(job.status_location));
    const status = readStatus(doc);
    const info = {id: job.job_id, process: job.process, inputs: {}};
    if (status.status !== "succeeded") {
      box.replaceChildren(el("p", {}, `${job.process} ${job.job_id}: ${status.status}. ${status.message}`));
      return;
    }
    const outputs = readOutputs(doc);
    rememberJob(info, outputs);
    renderOutputs(box, info, outputs);
    if (QC_PROCESSES.has(job.process)) showQC(info, outputs);
  } catch (err) {
    report(err);
  }
}

/** Reads the outputs of recent succeeded jobs (once each) to offer them as datasets in forms. */
async function loadJobDatasets(jobs) {
  const todo = jobs.filter((j) => j.status === "succeeded" && j.status_location && !j.outputs_removed
    && !state.jobDatasets.has(j.job_id)).slice(0, MAX_JOBS_FOR_DATASETS);
  for (const job of todo) state.jobDatasets.set(job.job_id, null);
  for (const job of todo) {
    let datasets = [];
    try {
      const outputs = readOutputs(await getXML(viaProxy(job.status_location)));
      datasets = outputs.map((o) => ({dataset: outputDataset(o), label: `${job.process} ${o.id}`}))
        .filter((d) => d.dataset);
    } catch (err) {
      console.warn(`outputs of job ${job.job_id}:`, err);
    }
    if (state.jobDatasets.get(job.job_id) === null) state.jobDatasets.set(job.job_id, datasets);
  }
  if (todo.length) updateDatasets();
}
