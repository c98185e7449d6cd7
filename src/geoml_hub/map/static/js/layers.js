/*
 * The Layers panel: scenes and label rasters as tile layers, with band, stretch and opacity
 * controls and legends; job outputs shown as layers.
 */
import {getJSON} from "./api.js";
import {remember, updateDatasets} from "./datasets.js";
import {boundsOf} from "./map.js";
import {state} from "./state.js";
import {$, el, report, showMessage, uniqueId} from "./util.js";

const CUSTOM_BANDS = "custom";
/** Whether the map was zoomed to a layer already (the first layer turned on zooms to itself). */
let zoomed = false;
/** localStorage key of the layers turned on (their datasets), restored on the next visit. */
export const SHOWN_KEY = "geoml-map-layers";

function savedLayers() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(SHOWN_KEY));
    return Array.isArray(saved) ? saved.filter((d) => typeof d === "string") : null;
  } catch (err) {
    return null;  // no storage (private mode, a sandboxed frame) or a broken value
  }
}

function saveLayers() {
  const shown = [...state.layers.values()].filter((e) => e.checkbox && e.checkbox.checked).map((e) => e.info.dataset);
  try {
    window.localStorage.setItem(SHOWN_KEY, JSON.stringify(shown));
  } catch (err) {
    // storage unavailable: the choice is simply not remembered
  }
}

function layerLabel(info) {
  const job = /^jobs\/([^/]+)\//.exec(info.dataset);
  return job ? `${info.name} (job ${job[1].slice(0, 8)})` : info.name;
}

export async function loadLayers() {
  const data = await getJSON("api/layers");
  for (const info of data.layers) addLayerRow(info);
  const status = $("#layers-status");
  status.textContent = data.layers.length ? "" : "No rasters in the data roots.";
  status.hidden = data.layers.length > 0;
  updateDatasets();
  showInitialLayers(data.layers);
}

/** The layers of the last visit (localStorage), else the first scene; the map zooms to the first. */
function showInitialLayers(layers) {
  const saved = (savedLayers() || []).filter((d) => state.layers.has(d));
  const firstScene = layers.find((info) => info.kind === "scene");
  const shown = saved.length ? saved : (firstScene ? [firstScene.dataset] : []);
  for (const dataset of shown) {
    const entry = state.layers.get(dataset);
    entry.checkbox.checked = true;
    toggleLayer(entry, true, {save: false});
  }
}

function addLayerRow(info) {
  const entry = {info, tile: null, checkbox: null, controls: null, opacity: info.kind === "scene" ? 1 : 0.8};
  state.layers.set(info.dataset, entry);
  const row = el("li", {class: "layer", "data-kind": info.kind}, layerHead(entry));
  if (info.kind === "scene") row.append(sceneControls(entry));
  row.append(opacityControl(entry));
  if (info.kind === "labels") row.append(legendBox(info.dataset));
  if (info.kind === "confidence") row.append(confidenceLegend(info.dataset));
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

/** The ramp of a confidence raster (tiles.CONFIDENCE_RAMP): red where the model is unsure. */
function confidenceLegend(dataset) {
  const ramp = el("span", {class: "ramp", "aria-hidden": "true"});
  ramp.style.background = "linear-gradient(to right, #a50026, #f46d43, #fee08b, #d9ef8b, #66bd63, #006837)";
  return el("div", {class: "legend", "data-legend-for": dataset},
    el("span", {class: "muted"}, "0 unsure"), ramp, el("span", {class: "muted"}, "1 sure"),
    el("span", {class: "muted small"}, "probability of the predicted class; draw new training polygons where it is red"));
}

function legendItem(cls) {
  const swatch = el("span", {class: "swatch", "aria-hidden": "true"});
  swatch.style.backgroundColor = cls.color;  // CSSOM, not a style attribute: allowed by a strict CSP
  // a class without a name in the raster shows its code as "class N"
  const named = cls.name !== undefined && cls.name !== null && String(cls.name) !== String(cls.code);
  return el("div", {class: "legend-item", "data-code": cls.code, title: `code ${cls.code}`}, swatch,
    named ? cls.name : `class ${cls.code}`);
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

function toggleLayer(entry, on, {save = true} = {}) {
  if (!on) {
    if (entry.tile) entry.tile.remove();
    entry.tile = null;
    if (save) saveLayers();
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
  if (!zoomed) zoomTo(entry);
  if (save) saveLayers();
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
  zoomed = true;
}

/** Shows a job's output raster (jobs/<id>/<file>) as a layer, adding it to the list first
 * (with show false: only adds it, turned off). */
export async function showJobLayer(dataset, {show = true} = {}) {
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
  if (show && !entry.checkbox.checked) {
    entry.checkbox.checked = true;
    toggleLayer(entry, true);
  }
}
