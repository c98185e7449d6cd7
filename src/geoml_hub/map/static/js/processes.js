/*
 * The Processes panel: forms from DescribeProcess (inputs prefilled along the registry's chain),
 * an async Execute, status polling with progress and cancel, and the job's outputs (a
 * classification and its confidence shown as layers, a banner when the model is not fit for the
 * scene, a QC report in the QC panel).
 */
import {getJSON, getXML, request, viaProxy} from "./api.js";
import {rememberJob} from "./datasets.js";
import {refreshJobs} from "./jobs.js";
import {showJobLayer} from "./layers.js";
import {renderOutputs} from "./outputs.js";
import {showQC} from "./qc.js";
import {CHAIN, QC_PROCESSES, readRegistry} from "./registry.js";
import {state} from "./state.js";
import {$, clearMessage, el, fileName, report, showMessage} from "./util.js";
import {
  childText, childrenNamed, child, descendants, executeRequest, outputDataset, parseInput, parseXML, readOutputs,
  readStatus,
} from "./wps.js";

const POLL_MS = 1000;
/** Consecutive failed status polls (network, proxy, unreadable document) before giving up. */
const MAX_POLL_ERRORS = 10;
const ACTIVE_STATUS = new Set(["accepted", "running"]);

/** The descriptions read (id -> description), the one in the form, and the job of the panel. */
const panel = {descriptions: new Map(), current: null, chooseToken: 0, job: null};

/** Attempts at reading the WPS's capabilities at start-up (a busy WPS may answer 503 once). */
const CAPABILITIES_ATTEMPTS = 5;

export async function loadProcesses() {
  let doc;
  for (let attempt = 1; ; attempt++) {
    try {
      doc = await getXML("api/wps/wps?service=WPS&request=GetCapabilities&version=1.0.0");
      break;
    } catch (err) {
      if (attempt >= CAPABILITIES_ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** (attempt - 1)));
    }
  }
  const select = $("#process-select");
  for (const process of descendants(doc, "Process")) {
    const id = childText(process, "Identifier");
    readRegistry(id, process);
    select.append(el("option", {value: id, title: childText(process, "Abstract")}, `${childText(process, "Title")} (${id})`));
  }
}

async function describeProcess(id) {
  if (!panel.descriptions.has(id)) {
    const doc = await getXML(`api/wps/wps?service=WPS&request=DescribeProcess&version=1.0.0&identifier=${encodeURIComponent(id)}`);
    const node = descendants(doc, "ProcessDescription")[0];
    if (!node) throw new Error(`the WPS did not describe ${id}`);
    panel.descriptions.set(id, {
      id,
      title: childText(node, "Title"),
      abstract: childText(node, "Abstract"),
      inputs: childrenNamed(child(node, "DataInputs"), "Input").map(parseInput),
    });
  }
  return panel.descriptions.get(id);
}

export async function chooseProcess(id) {
  const token = ++panel.chooseToken;
  const form = $("#process-form");
  panel.current = null;
  delete form.dataset.process;
  form.replaceChildren();
  $("#process-abstract").textContent = "";
  updateRunButton();
  if (!id) return;
  let description;
  try {
    description = await describeProcess(id);
  } catch (err) {
    report(err);
    return;
  }
  if (token !== panel.chooseToken) return;  // another process was chosen meanwhile
  panel.current = description;
  $("#process-abstract").textContent = description.abstract;
  form.replaceChildren(...description.inputs.map(inputField));
  prefillFromChain(id);
  form.dataset.process = id;  // the form is complete
  updateRunButton();
}

function isDatasetInput(input) {
  return input.type === "string" && /dataset name/i.test(input.abstract);
}

function inputField(input) {
  const id = `input-${input.id}`;
  const required = input.minOccurs > 0;
  const control = inputControl(input, id);
  const field = el("div", {class: "field", "data-input": input.id},
    el("label", {for: id}, input.title || input.id,
      required ? el("span", {class: "required-mark", title: "required"}, " *") : null,
      " ", el("code", {class: "muted"}, input.id)),
    el("div", {class: "control"}, control, input.uom ? el("span", {class: "uom"}, input.uom) : null));
  if (input.maxOccurs > 1) field.append(addAnotherButton(input, control));
  if (input.abstract) field.append(el("details", {class: "help"}, el("summary", {}, "About"), el("p", {}, input.abstract)));
  return field;
}

function inputControl(input, id) {
  const common = {id, name: input.id, required: input.minOccurs > 0};
  const boolean = input.type === "boolean";
  if (input.values.length || boolean) {
    const values = input.values.length ? input.values : ["true", "false"];
    const chosen = boolean && input.defaultValue !== null ? input.defaultValue.toLowerCase() : input.defaultValue;
    const options = values.map((v) => el("option", {value: v, selected: v === chosen}, v));
    if (chosen === null) options.unshift(el("option", {value: "", selected: true}, input.minOccurs > 0 ? "— choose —" : "(default)"));
    return el("select", common, ...options);
  }
  const integer = /int/.test(input.type);
  if (integer || /float|double|decimal/.test(input.type)) {
    return el("input", {...common, type: "number", min: input.min || null, max: input.max || null,
      step: integer ? input.spacing || 1 : "any", value: input.defaultValue});
  }
  return el("input", {...common, type: "text", value: input.defaultValue, spellcheck: false, autocomplete: "off",
    list: isDatasetInput(input) ? "datasets" : null});
}

/** A button adding one more field for an input that takes several values (e.g. scene). */
function addAnotherButton(input, first) {
  const button = el("button", {type: "button", class: "small"}, `Add another ${input.id}`);
  button.addEventListener("click", () => {
    const count = $("#process-form").querySelectorAll(`[name="${CSS.escape(input.id)}"]`).length;
    if (count >= input.maxOccurs) {
      showMessage(`${input.id} takes at most ${input.maxOccurs} values.`);
      return;
    }
    const extra = first.cloneNode(false);
    extra.id = `${first.id}-${count + 1}`;
    extra.value = "";
    extra.required = false;
    extra.setAttribute("aria-label", `${input.title || input.id} ${count + 1}`);
    button.before(extra);
  });
  return button;
}

function prefillFromChain(process) {
  for (const [name, sources] of Object.entries(CHAIN[process] || {})) {
    const value = sources.map(([source, key]) => (state.recent[source] || {})[key]).find(Boolean);
    const field = $(`#process-form [name="${CSS.escape(name)}"]`);  // the first one of a repeated input
    if (value && field) field.value = value;
  }
}

/** [[input, value], ...] of the form, and what is wrong with it. */
function collectInputs(description) {
  const form = $("#process-form");
  const values = [];
  const problems = [];
  for (const input of description.inputs) {
    const fields = Array.from(form.querySelectorAll(`[name="${CSS.escape(input.id)}"]`));
    const given = fields.filter((f) => f.value.trim() !== "");
    for (const f of given) {
      if (!f.checkValidity()) problems.push(`${input.title || input.id}: ${f.validationMessage}`);
      values.push([input.id, f.value.trim()]);
    }
    if (input.minOccurs > 0 && !given.length) problems.push(`${input.title || input.id} is required`);
  }
  return {values, problems};
}

function jobActive() {
  return Boolean(panel.job && ACTIVE_STATUS.has(panel.job.status));
}

function updateRunButton() {
  $("#run-process").disabled = !panel.current || jobActive();
}

function setProgress({status, percent, message}) {
  const box = $("#job-progress");
  const job = panel.job;
  box.hidden = false;
  box.dataset.job = (job && job.id) || "";
  box.dataset.status = status;
  $("#job-progress-bar").value = percent;
  $("#job-percent").textContent = `${Math.round(percent)}%`;
  $("#job-message").textContent = message;
  $("#cancel-job").disabled = !(ACTIVE_STATUS.has(status) && job && job.id && !job.cancelling);
}

export async function runProcess() {
  const description = panel.current;
  if (!description || jobActive()) return;
  const {values, problems} = collectInputs(description);
  if (problems.length) {
    showMessage(problems.join("; "));
    return;
  }
  clearMessage();
  const job = {id: null, process: description.id, status: "accepted", inputs: {}, statusLocation: null};
  for (const [name, value] of values) if (!(name in job.inputs)) job.inputs[name] = value;
  panel.job = job;
  $("#job-result").replaceChildren();
  $("#job-id").textContent = "";
  setProgress({status: "accepted", percent: 0, message: `Submitting ${description.id}…`});
  updateRunButton();
  let doc;
  try {
    doc = await getXML("api/wps/wps", executeRequest(description.id, values));
  } catch (err) {
    job.status = "failed";
    setProgress({status: "failed", percent: 0, message: err.message});
    updateRunButton();
    showMessage(`${description.id} was refused: ${err.message}`);
    return;
  }
  job.statusLocation = doc.documentElement.getAttribute("statusLocation");
  if (job.statusLocation) job.id = fileName(job.statusLocation).replace(/\.xml$/, "");
  $("#job-id").textContent = job.id || "";
  refreshJobs();
  await handleStatus(job, doc);
}

/** Shows a job's state; a success is shown once its outputs are on the page (layer, QC figures). */
async function handleStatus(job, doc) {
  let status = readStatus(doc);
  if (job !== panel.job) return;  // a newer job took over the panel
  if (ACTIVE_STATUS.has(status.status) && !job.statusLocation) {
    status = {status: "failed", percent: 0, message: "the WPS gave no status location to follow the job"};
  }
  job.status = status.status;
  if (status.status === "succeeded") {
    await finishJob(job, doc);
  } else if (status.status === "failed") {
    showMessage(`${job.process} failed: ${status.message}`, job.cancelling ? "info" : "error");
  } else {
    setTimeout(() => pollJob(job), POLL_MS);
  }
  setProgress(status);
  updateRunButton();
}

async function pollJob(job) {
  let doc;
  try {
    const resp = await request(viaProxy(job.statusLocation), {cache: "no-store"});
    doc = parseXML(await resp.text());
    readStatus(doc);
  } catch (err) {
    // A proxy hiccup or a document being replaced: try again a few times before giving up.
    job.errors = (job.errors || 0) + 1;
    if (job.errors < MAX_POLL_ERRORS) {
      setTimeout(() => pollJob(job), POLL_MS);
    } else if (job === panel.job) {
      job.status = "failed";
      setProgress({status: "failed", percent: 0, message: `lost track of the job: ${err.message}`});
      updateRunButton();
      report(err);
    }
    return;
  }
  job.errors = 0;
  await handleStatus(job, doc);
}

export async function cancelJob() {
  const job = panel.job;
  if (!job || !job.id) return;
  job.cancelling = true;
  $("#cancel-job").disabled = true;
  try {
    await request(`api/wps/jobs/${encodeURIComponent(job.id)}/cancel`, {method: "POST"});
  } catch (err) {
    job.cancelling = false;
    report(err);
  }
  refreshJobs();
}

/** A banner when the spectral compatibility check said the model is not fit for the scene. */
async function warnIfNotCompatible(outputs) {
  const verdict = outputs.find((o) => o.id === "compatible");
  if (!verdict || verdict.value !== "not compatible") return;
  let reason = (outputs.find((o) => o.id === "reason") || {}).value || "";
  const summary = outputs.find((o) => o.id === "compatibility" && o.href);
  if (!reason && summary) {
    try {
      reason = (await getJSON(viaProxy(summary.href), {cache: "no-store"})).reason || "";
    } catch (err) {
      reason = "";  // the banner still says it; the outputs table links the summary
    }
  }
  showMessage(`The model may not fit this scene: ${reason || "not compatible"}`, "warning");
}

async function finishJob(job, doc) {
  const outputs = readOutputs(doc);
  rememberJob(job, outputs);
  renderOutputs($("#job-result"), job, outputs);
  refreshJobs();
  const shown = [];
  if (job.process === "classify_scene") {
    const classification = outputs.find((o) => o.id === "classification");
    const dataset = classification && outputDataset(classification);
    // the confidence raster in the layer list (off; on top of the classification when turned on)
    const confidence = outputs.find((o) => o.id === "confidence" && o.href);
    const confidenceDataset = confidence && outputDataset(confidence);
    if (dataset) shown.push(showJobLayer(dataset));
    if (confidenceDataset) shown.push(showJobLayer(confidenceDataset, {show: false}));
  }
  if (job.process === "classify_scene" || job.process === "check_compatibility") shown.push(warnIfNotCompatible(outputs));
  if (QC_PROCESSES.has(job.process)) shown.push(showQC(job, outputs));
  await Promise.all(shown);
}
