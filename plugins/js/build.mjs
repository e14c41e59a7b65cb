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

const here = dirname(fileURLToPath(import.meta.url));
const [folder, out] = process.argv.slice(2);
if (!folder) {
  console.error("usage: node build.mjs <folder> [out.wasm]");
  process.exit(2);
}
const target = resolve(out ?? join(here, "..", `${folder}-js.wasm`));
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(folder, "app.js"),
  witPath: resolve(here, "../../wit"),
  worldName: "projector",
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
// Write then rename: a watching host must never see half a module.
const tmp = join(dirname(target), `.${folder}-js.wasm.building`);
await writeFile(tmp, component);
await rename(tmp, target);
console.log(`built ${target} (${component.length} bytes)`);
