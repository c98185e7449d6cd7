/*
 * geoml-hub web map: raster layers, training polygons, WPS processes, jobs and quality control.
 *
 * The entry module (index.html loads it with <script type="module"> after Leaflet and
 * Leaflet.draw, which stay classic scripts: the global L). Plain ES2017+ modules without a build
 * step; every URL is relative to the page (the service lives under a prefix such as
 * /services/map/), and text from the server is put into the page with textContent only.
 *
 * Modules (each imports only those listed before it, so no import cycles):
 *   util.js       DOM and text helpers, the message bar
 *   state.js      what several panels share (config, the map, layers, datasets, chain values)
 *   wps.js        WPS 1.0.0 XML: read capabilities, descriptions, status, outputs; write Execute
 *   api.js        fetch with readable errors, JSON and XML answers, the WPS proxy's URLs
 *   datasets.js   the forms' datalist of datasets and the values processes chain from
 *   registry.js   the processes' qc and chain attributes from GetCapabilities
 *   map.js        the Leaflet map
 *   layers.js     the Layers panel (tile layers, bands, stretch, opacity, legends)
 *   samples.js    the Training samples panel (drawing, classes, GeoJSON in the workspace)
 *   qc.js         the Quality control panel
 *   outputs.js    a job's outputs as a table (Processes and Jobs panels)
 *   jobs.js       the Jobs panel (jobs, shared results)
 *   processes.js  the Processes panel (forms, Execute, progress, cancel)
 */
import {getJSON} from "./api.js";
import {refreshJobs, refreshResults} from "./jobs.js";
import {loadLayers} from "./layers.js";
import {initMap} from "./map.js";
import {cancelJob, chooseProcess, loadProcesses, runProcess} from "./processes.js";
import {initSamples, loadWorkspaceFiles} from "./samples.js";
import {state} from "./state.js";
import {$, clearMessage, report, showMessage} from "./util.js";

const JOBS_REFRESH_MS = 5000;

function bindControls() {
  $("#message-close").addEventListener("click", clearMessage);
  $("#process-select").addEventListener("change", () => chooseProcess($("#process-select").value));
  $("#process-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runProcess();
  });
  $("#run-process").addEventListener("click", runProcess);
  $("#cancel-job").addEventListener("click", cancelJob);
  $("#refresh-jobs").addEventListener("click", async () => {
    refreshResults();
    await refreshJobs();
    const status = $("#jobs-status");
    if (!status.hidden) showMessage(status.textContent);
  });
}

async function main() {
  bindControls();
  if (typeof L === "undefined" || !L.Draw) {
    showMessage("Leaflet or Leaflet.draw did not load (vendor/leaflet, vendor/leaflet-draw).");
    return;
  }
  try {
    state.config = await getJSON("api/config");
  } catch (err) {
    report(err);
    return;
  }
  $("#user").textContent = state.config.user;
  $("#version").textContent = state.config.version ? `geoml-hub ${state.config.version}` : "";
  initMap();
  initSamples();
  await Promise.all([
    loadLayers().catch((err) => {
      $("#layers-status").textContent = `Cannot list layers: ${err.message}`;
      report(err);
    }),
    loadProcesses().catch(report),
    loadWorkspaceFiles().catch(report),
    refreshJobs(),
    refreshResults(),
  ]);
  setInterval(refreshJobs, JOBS_REFRESH_MS);
}

// Module scripts are deferred: they run once the document is parsed (the elements are there)
// and after the classic deferred scripts before them (Leaflet, Leaflet.draw).
main();
