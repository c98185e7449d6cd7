/*
 * The Leaflet map (Leaflet is a classic script loaded before the modules: the global L).
 */
import {state} from "./state.js";
import {escapeHTML} from "./util.js";

export function initMap() {
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

/** A layer's lon/lat bounds [west, south, east, north] as Leaflet bounds. */
export function boundsOf(info) {
  const [west, south, east, north] = info.bounds;
  return L.latLngBounds([south, west], [north, east]);
}
