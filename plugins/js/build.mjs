// Builds one JS projection folder into a component:
//   node build.mjs <folder> [out.wasm]     (default out: ../<folder>-js.wasm, i.e. in plugins/)
// componentize-js runs the source inside the component sandbox rooted at the
// current directory, so it runs from this folder: `import ... from "../sdk/refract.js"`
// in <folder>/app.js then resolves to sdk/refract.js here. WASI features
// (stdio, random, clocks, http) are disabled: a projection needs none of them.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile, rename } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

//   node build.mjs --interpreter out.wasm  refract dev's interpreter (sdk/refract_interpreter.js), which
//                                          runs a project's source handed over at load time.
const here = dirname(fileURLToPath(import.meta.url));
const [folder, out] = process.argv.slice(2);
if (!folder || (folder === "--interpreter" && !out)) {
  console.error("usage: node build.mjs <folder> [out.wasm] | node build.mjs --interpreter out.wasm");
  process.exit(2);
}
const interpreter = folder === "--interpreter";
const target = resolve(out ?? join(here, "..", `${folder}-js.wasm`));
const witPath = resolve(here, "../../wit");
process.chdir(here);
const { component } = await componentize({
  sourcePath: interpreter ? join("sdk", "refract_interpreter.js") : join(folder, "app.js"),
  witPath,
  worldName: interpreter ? "interpreted" : "projector",
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
// Write then rename: a watching host must never see half a module.
const tmp = join(dirname(target), `.${interpreter ? "interpreter" : folder}-js.wasm.building`);
await writeFile(tmp, component);
await rename(tmp, target);
console.log(`built ${target} (${component.length} bytes)`);
