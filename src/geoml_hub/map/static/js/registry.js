/*
 * The processes' registry attributes (processes/__init__.py), read from the ows:Metadata of
 * GetCapabilities: which processes give a QC report, and how their inputs chain.
 */
import {XLINK_NS, childrenNamed} from "./wps.js";

/** The xlink:role of the ows:Metadata that carry a process's registry attributes (before "#name"). */
const REGISTRY_ROLE = "urn:geoml-hub:process";

/** The processes whose outputs are a QC report: filled by readRegistry. */
export const QC_PROCESSES = new Set();

/*
 * How processes chain: {process: {input: [[source, name], ...]}}. When a process is chosen, each
 * listed input is filled from the first source that has a value: the last succeeded job of that
 * process in this page (its outputs as dataset names, and the inputs it was run with), or "map"
 * (the scene layer turned on last, the training polygons saved or loaded last). Filled by
 * readRegistry.
 */
export const CHAIN = {};

/**
 * Reads a process's registry attributes from its ows:Metadata: "qc" (title "true") and one "chain"
 * per input, titled "input=source.name,source.name".
 */
export function readRegistry(id, process) {
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
