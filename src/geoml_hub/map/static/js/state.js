/*
 * What several panels share. What only one panel uses lives in that panel's module.
 */

export const state = {
  /** api/config: user, admin, wps_url, basemap, version */
  config: null,
  /** the Leaflet map (map.js) */
  map: null,
  /** dataset -> {info, tile, checkbox, controls, opacity} (layers.js) */
  layers: new Map(),
  /** process (or "map") -> {name: value}: what the processes' chain reads (datasets.js) */
  recent: {},
  /** dataset names of the workspace files, for the form's datalist */
  workspaceDatasets: [],
  /** job id -> [{dataset, label}] (null while its status document is being read) */
  jobDatasets: new Map(),
};
