/*
 * The Training samples panel: polygons with a class each (drawn with Leaflet.draw, the global
 * L.Draw), saved as GeoJSON in the workspace and loaded back from it.
 */
import {getJSON} from "./api.js";
import {remember, updateDatasets} from "./datasets.js";
import {state} from "./state.js";
import {$, el, formatSize, formatTime, report, showMessage, uniqueId} from "./util.js";

const NEW_CLASS = "__new__";
const SAMPLES_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.geojson$/;
/** Colours of training classes, in the order the classes are added. */
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
  "#f032e6", "#bfef45", "#469990", "#9a6324", "#800000", "#000075"];

/** The polygons' layer group, the classes (name -> {code, color}) and the polygon being drawn. */
const samples = {group: null, classes: new Map(), drawer: null, drawingClass: null};

export function initSamples() {
  const s = samples;
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
  const classes = samples.classes;
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
  const classes = samples.classes;
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
  const s = samples;
  if (s.drawer) s.drawer.disable();
  s.drawingClass = name;
  s.drawer = new L.Draw.Polygon(state.map, {allowIntersection: false, showArea: false,
    shapeOptions: polygonStyle(s.classes.get(name).color)});
  s.drawer.enable();
}

function addSamplePolygon(layer, name) {
  layer.feature = {type: "Feature", properties: {class: name}};
  layer.bindPopup(() => polygonPopup(layer));
  samples.group.addLayer(layer);
  layer.setStyle(polygonStyle(samples.classes.get(name).color));
}

/** The popup of a polygon: change its class or delete it. */
function polygonPopup(layer) {
  const props = layer.feature.properties;
  const id = uniqueId("polygon-class");
  const select = el("select", {id, "data-polygon-class": ""},
    ...[...samples.classes.keys()].map((name) => el("option", {value: name, selected: name === props.class}, name)));
  select.addEventListener("change", () => {
    props.class = select.value;
    layer.setStyle(polygonStyle(samples.classes.get(select.value).color));
    updateSamplesCount();
  });
  const remove = el("button", {type: "button", "data-delete-polygon": ""}, "Delete polygon");
  remove.addEventListener("click", () => {
    samples.group.removeLayer(layer);
    updateSamplesCount();
  });
  return el("div", {class: "polygon-popup"}, el("label", {for: id}, "Class "), select, " ", remove);
}

function updateSamplesCount() {
  const layers = samples.group.getLayers();
  const n = layers.length;
  const k = new Set(layers.map((l) => l.feature.properties.class)).size;
  const box = $("#samples-count");
  box.textContent = `${n} polygon${n === 1 ? "" : "s"}, ${k} class${k === 1 ? "" : "es"}`;
  box.dataset.polygons = String(n);
  box.dataset.classes = String(k);
}

/** The polygons as extract_samples reads them: lon/lat, properties {class, code}. */
function samplesGeoJSON() {
  const features = samples.group.getLayers().map((layer) => {
    const feature = layer.toGeoJSON();
    const name = layer.feature.properties.class;
    feature.properties = {class: name, code: samples.classes.get(name).code};
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
  if (!samples.group.getLayers().length) {
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

export async function loadWorkspaceFiles() {
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
  const s = samples;
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
