/*
 * geoml-hub web map: raster layers, training polygons, WPS processes, jobs and quality control.
 *
 * Plain ES2017+ without a build step or libraries besides Leaflet and Leaflet.draw. Every URL is
 * relative to the page (the service lives under a prefix such as /services/map/), and text from
 * the server is put into the page with textContent only.
 */
"use strict";

const XLINK_NS = "http://www.w3.org/1999/xlink";
const POLL_MS = 1000;
const JOBS_REFRESH_MS = 5000;
/** Consecutive failed status polls (network, proxy, unreadable document) before giving up. */
const MAX_POLL_ERRORS = 10;
/** Finished jobs whose status documents are read to offer their outputs as datasets. */
const MAX_JOBS_FOR_DATASETS = 20;
const NEW_CLASS = "__new__";
const CUSTOM_BANDS = "custom";
const SAMPLES_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.geojson$/;
const ACTIVE_STATUS = new Set(["accepted", "running"]);
const ACTIVE_JOB_STATES = new Set(["queued", "running"]);
/** The processes whose outputs are a QC report: filled by loadProcesses from the WPS's registry. */
const QC_PROCESSES = new Set();
/** The xlink:role of the ows:Metadata that carry a process's registry attributes (before "#name"). */
const REGISTRY_ROLE = "urn:geoml-hub:process";
/** Colours of training classes, in the order the classes are added. */
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
  "#f032e6", "#bfef45", "#469990", "#9a6324", "#800000", "#000075"];

/*
 * How processes chain: {process: {input: [[source, name], ...]}}. When a process is chosen, each
 * listed input is filled from the first source that has a value: the last succeeded job of that
 * process in this page (its outputs as dataset names, and the inputs it was run with), or "map"
 * (the scene layer turned on last, the training polygons saved or loaded last). Filled by
 * loadProcesses from the processes' registry attributes in GetCapabilities (processes/__init__.py).
 */
const CHAIN = {};

const state = {
  config: null,
  map: null,
  /** dataset -> {info, tile, checkbox, controls, opacity} */
  layers: new Map(),
  zoomed: false,
  /** process (or "map") -> {name: value}: what CHAIN reads */
  recent: {},
  /** known datasets for the form's datalist */
  workspaceDatasets: [],
  /** job id -> [{dataset, label}] (null while its status document is being read) */
  jobDatasets: new Map(),
  samples: {group: null, classes: new Map(), drawer: null, drawingClass: null},
  descriptions: new Map(),
  current: null,
  chooseToken: 0,
  job: null,
  jobsJSON: "",
  jobsBusy: false,
  jobsAgain: false,
};

// ---------------------------------------------------------------------------------------------
// DOM and text helpers

function $(selector, root = document) {
  return root.querySelector(selector);
}

/**
 * A new element. attrs are attributes (null, undefined and false leave one out, true sets it
 * empty), except `on`: {event: handler}. Children are nodes or strings (inserted as text).
 */
function el(tag, attrs = {}, ...children) {
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
function uniqueId(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Text as HTML, for the one place that takes HTML: Leaflet's attribution. */
function escapeHTML(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function showMessage(text, kind = "error") {
  $("#message-text").textContent = text;
  $("#message").dataset.kind = kind;
  $("#message").hidden = false;
}

function clearMessage() {
  $("#message").hidden = true;
}

function report(err) {
  console.error(err);
  showMessage(err && err.message ? err.message : String(err));
}

function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function formatFraction(value) {
  return value === null || value === undefined || Number.isNaN(Number(value)) ? "—" : Number(value).toFixed(3);
}

function fileName(url) {
  return decodeURIComponent(new URL(url, window.location.href).pathname.split("/").pop());
}

// ---------------------------------------------------------------------------------------------
// HTTP and WPS XML

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

async function request(url, options = {}) {
  let resp;
  try {
    resp = await fetch(url, options);
  } catch (err) {
    throw new Error(`${url}: ${err.message}`);
  }
  if (!resp.ok) throw new Error(await errorText(resp, url));
  return resp;
}

async function getJSON(url, options = {}) {
  const resp = await request(url, options);
  const text = await resp.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${url.split("?")[0]}: the answer is not JSON (has the login expired? reload the page)`);
  }
}

function parseXML(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) throw new Error("the WPS answered with unreadable XML");
  return doc;
}

/** A WPS XML document; an ExceptionReport becomes an error with its text. */
async function getXML(url, options = {}) {
  const resp = await request(url, {cache: "no-store", ...options});
  const doc = parseXML(await resp.text());
  if (doc.documentElement.localName === "ExceptionReport") {
    throw new Error(exceptionText(doc) || "the WPS refused the request");
  }
  return doc;
}

// WPS 1.0.0 mixes ows:, wps: and unqualified element names: match on the local name only.
function childrenNamed(node, name) {
  return node ? Array.from(node.children).filter((c) => c.localName === name) : [];
}

function child(node, name) {
  return childrenNamed(node, name)[0] || null;
}

function childText(node, name) {
  const found = child(node, name);
  return found ? found.textContent.trim() : "";
}

function descendants(node, name) {
  return Array.from(node.getElementsByTagNameNS("*", name));
}

function exceptionText(node) {
  return descendants(node, "ExceptionText").map((e) => e.textContent.trim()).filter(Boolean).join("; ");
}

/** A URL of the WPS (status document, output file) as the same URL through this service's proxy. */
function viaProxy(url) {
  const base = state.config.wps_url.replace(/\/+$/, "");
  return url.startsWith(`${base}/`) ? `api/wps${url.slice(base.length)}` : url;
}

// ---------------------------------------------------------------------------------------------
// Map and layers

function initMap() {
  const map = L.map("map", {maxZoom: 20}).setView([15, -40], 2);
  map.attributionControl.setPrefix("Leaflet");  // the default prefix links to an external site
  // Scenes above the optional base map, label rasters above scenes, polygons above both.
  map.createPane("scenes").style.zIndex = 250;
  map.createPane("labels").style.zIndex = 300;
  const basemap = state.config.basemap;
  if (basemap && basemap.url) {
    L.tileLayer(basemap.url, {attribution: escapeHTML(basemap.attribution || ""), maxZoom: 20, maxNativeZoom: 19})
      .addTo(map);
  }
  L.control.scale({imperial: false}).addTo(map);
  state.map = map;
  window.geomlMap = map;  // for scripted use: the browser tests, the developer console
}

function boundsOf(info) {
  const [west, south, east, north] = info.bounds;
  return L.latLngBounds([south, west], [north, east]);
}

function layerLabel(info) {
  const job = /^jobs\/([^/]+)\//.exec(info.dataset);
  return job ? `${info.name} (job ${job[1].slice(0, 8)})` : info.name;
}

async function loadLayers() {
  const data = await getJSON("api/layers");
  for (const info of data.layers) addLayerRow(info);
  const status = $("#layers-status");
  status.textContent = data.layers.length ? "" : "No rasters in the data roots.";
  status.hidden = data.layers.length > 0;
  updateDatasets();
}

function addLayerRow(info) {
  const entry = {info, tile: null, checkbox: null, controls: null, opacity: info.kind === "scene" ? 1 : 0.8};
  state.layers.set(info.dataset, entry);
  const row = el("li", {class: "layer", "data-kind": info.kind}, layerHead(entry));
  if (info.kind === "scene") row.append(sceneControls(entry));
  row.append(opacityControl(entry));
  if (info.kind === "labels") row.append(legendBox(info.dataset));
  $("#layers-list").append(row);
  return entry;
}

function layerHead(entry) {
  const {info} = entry;
  entry.checkbox = el("input", {type: "checkbox", "data-layer": info.dataset,
    on: {change: () => toggleLayer(entry, entry.checkbox.checked)}});
  return el("div", {class: "layer-head"},
    el("label", {title: info.dataset}, entry.checkbox, " ", layerLabel(info)),
    el("span", {class: "kind"}, info.kind),
    info.bounds ? el("button", {type: "button", class: "small", "data-zoom-to": info.dataset,
      on: {click: () => zoomTo(entry)}}, "Zoom to") : null);
}

function sceneControls(entry) {
  const {info} = entry;
  const ds = info.dataset;
  const presets = Object.entries(info.presets || {});
  const bandsId = uniqueId("bands");
  const bands = el("select", {id: bandsId, "data-bands-for": ds},
    ...presets.map(([name, list]) => el("option", {value: list.join(",")}, `${name} (${list.join(",")})`)),
    el("option", {value: CUSTOM_BANDS}, "custom…"));
  const customId = uniqueId("custom-bands");
  const custom = el("input", {type: "text", id: customId, "data-custom-bands-for": ds, placeholder: "r,g,b",
    value: presets.length ? presets[0][1].join(",") : "1", spellcheck: false, "aria-label": "Custom bands (r,g,b)"});
  const lowId = uniqueId("stretch-low");
  const highId = uniqueId("stretch-high");
  const low = el("input", {type: "number", id: lowId, min: 0, max: 100, step: 0.5, value: 2, "data-stretch-low-for": ds});
  const high = el("input", {type: "number", id: highId, min: 0, max: 100, step: 0.5, value: 98, "data-stretch-high-for": ds});
  entry.controls = {bands, custom, low, high};
  custom.hidden = true;
  bands.addEventListener("change", () => {
    custom.hidden = bands.value !== CUSTOM_BANDS;
    refreshLayer(entry);
  });
  for (const input of [custom, low, high]) input.addEventListener("change", () => refreshLayer(entry));
  const names = (info.band_names || []).map((n, i) => `${i + 1} ${n}`).join(", ");
  return el("div", {class: "scene-controls"},
    el("div", {class: "row"}, el("label", {for: bandsId}, "Bands"), bands, custom),
    el("div", {class: "row"}, el("label", {for: lowId}, "Stretch %", el("span", {class: "sr-only"}, " low percentile")), low,
      el("label", {for: highId, class: "sr-only"}, "Stretch high percentile"), "–", high),
    names ? el("p", {class: "muted small"}, `Bands: ${names}`) : null);
}

function opacityControl(entry) {
  const id = uniqueId("opacity");
  const input = el("input", {type: "range", id, min: 0, max: 1, step: 0.05, value: entry.opacity,
    "data-opacity-for": entry.info.dataset});
  input.addEventListener("input", () => {
    entry.opacity = Number(input.value);
    if (entry.tile) entry.tile.setOpacity(entry.opacity);
  });
  return el("div", {class: "row"}, el("label", {for: id}, "Opacity"), input);
}

function legendBox(dataset) {
  const box = el("div", {class: "legend", "data-legend-for": dataset}, el("span", {class: "muted"}, "Loading legend…"));
  loadLegend(dataset, box);
  return box;
}

async function loadLegend(dataset, box) {
  try {
    const data = await getJSON(`api/legend?dataset=${encodeURIComponent(dataset)}`);
    box.replaceChildren(...data.classes.map(legendItem));
    if (!data.classes.length) box.append(el("span", {class: "muted"}, "No classes."));
  } catch (err) {
    box.replaceChildren(el("span", {class: "muted"}, `No legend: ${err.message}`));
  }
}

function legendItem(cls) {
  const swatch = el("span", {class: "swatch", "aria-hidden": "true"});
  swatch.style.backgroundColor = cls.color;  // CSSOM, not a style attribute: allowed by a strict CSP
  return el("div", {class: "legend-item", "data-code": cls.code, title: `code ${cls.code}`}, swatch, cls.name);
}

/** The band and stretch query of a scene's tiles; throws on an invalid setting. */
function sceneQuery(entry) {
  const {info, controls} = entry;
  const bands = controls.bands.value === CUSTOM_BANDS ? controls.custom.value.replace(/\s+/g, "") : controls.bands.value;
  const numbers = bands.split(",").map(Number);
  if (!/^\d+(,\d+,\d+)?$/.test(bands) || numbers.some((b) => b < 1 || b > info.bands)) {
    throw new Error(`${info.name}: bands must be 1 or 3 band numbers from 1 to ${info.bands}, e.g. 3,2,1`);
  }
  const low = Number(controls.low.value);
  const high = Number(controls.high.value);
  if (controls.low.value === "" || controls.high.value === "" || !(low >= 0 && low < high && high <= 100)) {
    throw new Error(`${info.name}: the stretch needs percentiles 0 ≤ low < high ≤ 100`);
  }
  return `&bands=${bands}&stretch=${low},${high}`;
}

function tileUrl(entry) {
  const url = `api/tiles/{z}/{x}/{y}.png?dataset=${encodeURIComponent(entry.info.dataset)}`;
  return entry.info.kind === "scene" ? url + sceneQuery(entry) : url;
}

function toggleLayer(entry, on) {
  if (!on) {
    if (entry.tile) entry.tile.remove();
    entry.tile = null;
    return;
  }
  let url;
  try {
    url = tileUrl(entry);
  } catch (err) {
    entry.checkbox.checked = false;
    showMessage(err.message);
    return;
  }
  const options = {pane: entry.info.kind === "scene" ? "scenes" : "labels", maxNativeZoom: 18, maxZoom: 20,
    opacity: entry.opacity};
  if (entry.info.bounds) options.bounds = boundsOf(entry.info);
  entry.tile = L.tileLayer(url, options).addTo(state.map);
  if (entry.info.kind === "scene") remember("map", {scene: entry.info.dataset});
  if (!state.zoomed) zoomTo(entry);
}

function refreshLayer(entry) {
  if (!entry.tile) return;
  try {
    entry.tile.setUrl(tileUrl(entry));
  } catch (err) {
    showMessage(err.message);
  }
}

function zoomTo(entry) {
  if (!entry.info.bounds) return;
  state.map.fitBounds(boundsOf(entry.info));
  state.zoomed = true;
}

/** Shows a job's output raster (jobs/<id>/<file>) as a layer, adding it to the list first. */
async function showJobLayer(dataset) {
  if (!state.layers.has(dataset)) {
    let info;
    try {
      info = await getJSON(`api/layer-info?dataset=${encodeURIComponent(dataset)}`);
    } catch (err) {
      report(err);
      return;
    }
    if (!state.layers.has(dataset)) addLayerRow(info);  // unless a second click added it meanwhile
    updateDatasets();
  }
  const entry = state.layers.get(dataset);
  if (!entry.checkbox.checked) {
    entry.checkbox.checked = true;
    toggleLayer(entry, true);
  }
}

// ---------------------------------------------------------------------------------------------
// Training samples: polygons with a class each, saved as GeoJSON in the workspace

function initSamples() {
  const s = state.samples;
  s.group = L.featureGroup().addTo(state.map);
  $("#sample-class").addEventListener("change", () => renderClassSelect($("#sample-class").value));
  $("#add-class").addEventListener("click", addClassFromInput);
  $("#new-class-name").addEventListener("keydown", (event) => {
    if (event.key === "Enter") addClassFromInput();
  });
  $("#draw-polygon").addEventListener("click", startDrawing);
  $("#finish-polygon").addEventListener("click", () => s.drawer && s.drawer.completeShape());
  $("#cancel-draw").addEventListener("click", () => s.drawer && s.drawer.disable());
  $("#save-samples").addEventListener("click", saveSamples);
  state.map.on(L.Draw.Event.CREATED, (event) => {
    addSamplePolygon(event.layer, s.drawingClass);
    updateSamplesCount();
  });
  state.map.on(L.Draw.Event.DRAWSTART, () => setDrawing(true));
  state.map.on(L.Draw.Event.DRAWSTOP, () => setDrawing(false));
  renderClassSelect(NEW_CLASS);
  updateSamplesCount();
}

function setDrawing(drawing) {
  $("#finish-polygon").disabled = !drawing;
  $("#cancel-draw").disabled = !drawing;
  $("#draw-polygon").setAttribute("aria-pressed", String(drawing));
}

/** The class called name (created with the next free code, or the given one, when new). */
function ensureClass(name, code) {
  const classes = state.samples.classes;
  if (!classes.has(name)) {
    const used = new Set([...classes.values()].map((c) => c.code));
    let free = code;
    if (!Number.isInteger(free) || free < 1 || free > 65535 || used.has(free)) {
      free = 1;
      while (used.has(free)) free += 1;
    }
    classes.set(name, {code: free, color: PALETTE[classes.size % PALETTE.length]});
  }
  return classes.get(name);
}

function renderClassSelect(selected) {
  const select = $("#sample-class");
  const classes = state.samples.classes;
  select.replaceChildren(...[...classes.keys()].map((name) => el("option", {value: name}, name)),
    el("option", {value: NEW_CLASS}, "new class…"));
  select.value = classes.has(selected) ? selected : NEW_CLASS;
  $("#new-class-row").hidden = select.value !== NEW_CLASS;
  const swatch = $("#class-swatch");
  swatch.hidden = select.value === NEW_CLASS;
  if (classes.has(select.value)) swatch.style.backgroundColor = classes.get(select.value).color;
}

function addClassFromInput() {
  const input = $("#new-class-name");
  const name = input.value.trim();
  if (!name || name === NEW_CLASS) {
    showMessage("Type the name of the new class first.");
    input.focus();
    return;
  }
  ensureClass(name);
  input.value = "";
  renderClassSelect(name);
}

function selectedClass() {
  const value = $("#sample-class").value;
  return value === NEW_CLASS ? null : value;
}

function polygonStyle(color) {
  return {color, weight: 2, opacity: 0.9, fillColor: color, fillOpacity: 0.35};
}

function startDrawing() {
  if (!selectedClass() && $("#new-class-name").value.trim()) addClassFromInput();
  const name = selectedClass();
  if (!name) {
    showMessage("Choose a class, or add a new one, before drawing.");
    return;
  }
  const s = state.samples;
  if (s.drawer) s.drawer.disable();
  s.drawingClass = name;
  s.drawer = new L.Draw.Polygon(state.map, {allowIntersection: false, showArea: false,
    shapeOptions: polygonStyle(s.classes.get(name).color)});
  s.drawer.enable();
}

function addSamplePolygon(layer, name) {
  layer.feature = {type: "Feature", properties: {class: name}};
  layer.bindPopup(() => polygonPopup(layer));
  state.samples.group.addLayer(layer);
  layer.setStyle(polygonStyle(state.samples.classes.get(name).color));
}

/** The popup of a polygon: change its class or delete it. */
function polygonPopup(layer) {
  const props = layer.feature.properties;
  const id = uniqueId("polygon-class");
  const select = el("select", {id, "data-polygon-class": ""},
    ...[...state.samples.classes.keys()].map((name) => el("option", {value: name, selected: name === props.class}, name)));
  select.addEventListener("change", () => {
    props.class = select.value;
    layer.setStyle(polygonStyle(state.samples.classes.get(select.value).color));
    updateSamplesCount();
  });
  const remove = el("button", {type: "button", "data-delete-polygon": ""}, "Delete polygon");
  remove.addEventListener("click", () => {
    state.samples.group.removeLayer(layer);
    updateSamplesCount();
  });
  return el("div", {class: "polygon-popup"}, el("label", {for: id}, "Class "), select, " ", remove);
}

function updateSamplesCount() {
  const layers = state.samples.group.getLayers();
  const n = layers.length;
  const k = new Set(layers.map((l) => l.feature.properties.class)).size;
  const box = $("#samples-count");
  box.textContent = `${n} polygon${n === 1 ? "" : "s"}, ${k} class${k === 1 ? "" : "es"}`;
  box.dataset.polygons = String(n);
  box.dataset.classes = String(k);
}

/** The polygons as extract_samples reads them: lon/lat, properties {class, code}. */
function samplesGeoJSON() {
  const features = state.samples.group.getLayers().map((layer) => {
    const feature = layer.toGeoJSON();
    const name = layer.feature.properties.class;
    feature.properties = {class: name, code: state.samples.classes.get(name).code};
    return feature;
  });
  return {type: "FeatureCollection", features};
}

function showSaved(dataset) {
  $("#samples-saved").textContent = dataset;
  $("#samples-saved-row").hidden = false;
  remember("map", {samples: dataset});
}

async function saveSamples() {
  const name = $("#samples-name").value.trim();
  if (!SAMPLES_NAME.test(name)) {
    showMessage("File name: letters, digits, _ . or - ending in .geojson, e.g. samples.geojson");
    return;
  }
  if (!state.samples.group.getLayers().length) {
    showMessage("Draw at least one polygon before saving.");
    return;
  }
  const button = $("#save-samples");
  button.disabled = true;
  try {
    const result = await getJSON(`api/wps/workspace/${encodeURIComponent(name)}`, {method: "PUT",
      headers: {"Content-Type": "application/geo+json"}, body: JSON.stringify(samplesGeoJSON())});
    showSaved(result.dataset);
    await loadWorkspaceFiles();
  } catch (err) {
    report(err);
  } finally {
    button.disabled = false;
  }
}

async function loadWorkspaceFiles() {
  const data = await getJSON("api/wps/workspace", {cache: "no-store"});
  state.workspaceDatasets = data.files.map((f) => f.dataset);
  const list = $("#samples-files");
  list.replaceChildren(...data.files.map(fileRow));
  if (!data.files.length) list.append(el("li", {class: "muted"}, "No files yet."));
  updateDatasets();
}

function fileRow(file) {
  return el("li", {"data-file": file.name, on: {click: () => loadSamplesFile(file)}},
    el("button", {type: "button", class: "link", title: `Load ${file.dataset} onto the map`}, file.name),
    el("span", {class: "muted"}, ` ${formatSize(file.size)}, ${formatTime(file.modified)}`));
}

async function loadSamplesFile(file) {
  try {
    const geojson = await getJSON(`api/wps/workspace/${encodeURIComponent(file.name)}`, {cache: "no-store"});
    replaceSamples(geojson);
    $("#samples-name").value = file.name;
    showSaved(file.dataset);
  } catch (err) {
    report(err);
  }
}

/** Replaces the polygons on the map with a FeatureCollection's polygons and their classes. */
function replaceSamples(geojson) {
  const s = state.samples;
  if (s.drawer) s.drawer.disable();
  s.group.clearLayers();
  s.classes.clear();
  let skipped = 0;
  for (const feature of geojson.features || []) {
    const props = feature.properties || {};
    const name = String(props.class === undefined || props.class === null ? "" : props.class).trim();
    const geometry = feature.geometry;
    if (!name || !geometry || !["Polygon", "MultiPolygon"].includes(geometry.type)) {
      skipped += 1;
      continue;
    }
    ensureClass(name, props.code);
    addSamplePolygon(L.GeoJSON.geometryToLayer(feature), name);
  }
  renderClassSelect([...s.classes.keys()][0]);
  updateSamplesCount();
  if (s.group.getLayers().length) state.map.fitBounds(s.group.getBounds());
  if (skipped) showMessage(`${skipped} feature(s) without a class or not polygons were left out.`, "info");
}

// ---------------------------------------------------------------------------------------------
// Processes: forms from DescribeProcess, async Execute, status polling, outputs

async function loadProcesses() {
  const doc = await getXML("api/wps/wps?service=WPS&request=GetCapabilities&version=1.0.0");
  const select = $("#process-select");
  for (const process of descendants(doc, "Process")) {
    const id = childText(process, "Identifier");
    readRegistry(id, process);
    select.append(el("option", {value: id, title: childText(process, "Abstract")}, `${childText(process, "Title")} (${id})`));
  }
}

/**
 * Reads a process's registry attributes from its ows:Metadata: "qc" (title "true") and one "chain"
 * per input, titled "input=source.name,source.name".
 */
function readRegistry(id, process) {
  for (const meta of childrenNamed(process, "Metadata")) {
    const [base, name] = (meta.getAttributeNS(XLINK_NS, "role") || "").split("#");
    const title = meta.getAttributeNS(XLINK_NS, "title") || "";
    if (base !== REGISTRY_ROLE) continue;
    if (name === "qc" && title === "true") QC_PROCESSES.add(id);
    if (name === "chain") {
      const [input, sources] = title.split("=");
      if (!input || !sources) continue;
      CHAIN[id] = CHAIN[id] || {};
      CHAIN[id][input] = sources.split(",").map((s) => {
        const dot = s.indexOf(".");
        return [s.slice(0, dot), s.slice(dot + 1)];
      });
    }
  }
}

function parseOccurs(text, fallback) {
  if (text === null) return fallback;
  return text === "unbounded" ? Infinity : Number(text);
}

function parseInput(node) {
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

async function describeProcess(id) {
  if (!state.descriptions.has(id)) {
    const doc = await getXML(`api/wps/wps?service=WPS&request=DescribeProcess&version=1.0.0&identifier=${encodeURIComponent(id)}`);
    const node = descendants(doc, "ProcessDescription")[0];
    if (!node) throw new Error(`the WPS did not describe ${id}`);
    state.descriptions.set(id, {
      id,
      title: childText(node, "Title"),
      abstract: childText(node, "Abstract"),
      inputs: childrenNamed(child(node, "DataInputs"), "Input").map(parseInput),
    });
  }
  return state.descriptions.get(id);
}

async function chooseProcess(id) {
  const token = ++state.chooseToken;
  const form = $("#process-form");
  state.current = null;
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
  if (token !== state.chooseToken) return;  // another process was chosen meanwhile
  state.current = description;
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

function remember(source, values) {
  state.recent[source] = source === "map" ? {...state.recent.map, ...values} : values;
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

function xmlText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** An async Execute as a POST XML request: the WPS and the map refuse an Execute by GET with the login
 *  cookie (any site could send one), and a POST from this page carries its Origin. */
function executeRequest(process, values) {
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

function jobActive() {
  return Boolean(state.job && ACTIVE_STATUS.has(state.job.status));
}

function updateRunButton() {
  $("#run-process").disabled = !state.current || jobActive();
}

function setProgress({status, percent, message}) {
  const box = $("#job-progress");
  const job = state.job;
  box.hidden = false;
  box.dataset.job = (job && job.id) || "";
  box.dataset.status = status;
  $("#job-progress-bar").value = percent;
  $("#job-percent").textContent = `${Math.round(percent)}%`;
  $("#job-message").textContent = message;
  $("#cancel-job").disabled = !(ACTIVE_STATUS.has(status) && job && job.id && !job.cancelling);
}

async function runProcess() {
  const description = state.current;
  if (!description || jobActive()) return;
  const {values, problems} = collectInputs(description);
  if (problems.length) {
    showMessage(problems.join("; "));
    return;
  }
  clearMessage();
  const job = {id: null, process: description.id, status: "accepted", inputs: {}, statusLocation: null};
  for (const [name, value] of values) if (!(name in job.inputs)) job.inputs[name] = value;
  state.job = job;
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

/** The state of a WPS status document (or ExecuteResponse). */
function readStatus(doc) {
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

/** Shows a job's state; a success is shown once its outputs are on the page (layer, QC figures). */
async function handleStatus(job, doc) {
  let status = readStatus(doc);
  if (job !== state.job) return;  // a newer job took over the panel
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
    } else if (job === state.job) {
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

async function cancelJob() {
  const job = state.job;
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

function readOutputs(doc) {
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
function outputDataset(output) {
  if (output.href) {
    const path = decodeURIComponent(new URL(output.href, window.location.href).pathname);
    const at = path.lastIndexOf("/outputs/");
    const rest = at >= 0 ? path.slice(at + "/outputs/".length) : "";
    return rest.includes("/") ? `jobs/${rest}` : null;
  }
  return output.value.startsWith("jobs/") ? output.value : null;
}

/** Makes a succeeded job the source of CHAIN for its process; its dataset outputs join the datalist. */
function rememberJob(job, outputs) {
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

async function finishJob(job, doc) {
  const outputs = readOutputs(doc);
  rememberJob(job, outputs);
  renderOutputs($("#job-result"), job, outputs);
  refreshJobs();
  const shown = [];
  if (job.process === "classify_scene") {
    const classification = outputs.find((o) => o.id === "classification");
    const dataset = classification && outputDataset(classification);
    if (dataset) shown.push(showJobLayer(dataset));
  }
  if (QC_PROCESSES.has(job.process)) shown.push(showQC(job, outputs));
  await Promise.all(shown);
}

function renderOutputs(container, job, outputs) {
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
    value.textContent = output.value;
  }
  return el("tr", {"data-output": output.id}, el("th", {scope: "row", title: output.title}, output.id), value);
}

// ---------------------------------------------------------------------------------------------
// Quality control

function setFigure(selector, value) {
  const node = $(selector);
  node.textContent = value;
  node.dataset.value = value;
  node.title = value && !Number.isNaN(Number(value)) ? Number(value).toFixed(3) : "";
}

/** Fills the QC panel; resolves once the per-class table is there too. */
async function showQC(job, outputs) {
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

// ---------------------------------------------------------------------------------------------
// Jobs

async function refreshJobs() {
  if (state.jobsBusy) {
    state.jobsAgain = true;  // the list in flight may predate what the caller changed
    return;
  }
  state.jobsBusy = true;
  const status = $("#jobs-status");
  try {
    const data = await getJSON("api/wps/jobs", {cache: "no-store"});
    const jobs = [...data.jobs].sort((a, b) => String(b.created || "").localeCompare(String(a.created || "")));
    const text = JSON.stringify(jobs);
    if (text !== state.jobsJSON) {
      state.jobsJSON = text;
      renderJobs(jobs);
    }
    status.hidden = true;
    loadJobDatasets(jobs);
  } catch (err) {
    status.textContent = `Cannot list jobs: ${err.message}`;
    status.hidden = false;
  } finally {
    state.jobsBusy = false;
  }
  if (state.jobsAgain) {
    state.jobsAgain = false;
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
async function refreshResults() {
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

/** The datalist of dataset inputs: layers, workspace files, outputs of succeeded jobs. */
function updateDatasets() {
  const options = new Map();
  for (const [dataset, entry] of state.layers) options.set(dataset, `${entry.info.kind}: ${entry.info.name}`);
  for (const dataset of state.workspaceDatasets) options.set(dataset, "workspace file");
  for (const list of state.jobDatasets.values()) {
    for (const {dataset, label} of list || []) options.set(dataset, label);
  }
  $("#datasets").replaceChildren(...[...options].map(([value, label]) => el("option", {value, label})));
}

// ---------------------------------------------------------------------------------------------
// Start

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

// Deferred scripts run once the document is parsed: the elements are there.
main();
