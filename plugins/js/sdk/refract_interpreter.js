// The JavaScript interpreter `refract dev` runs projects with (the `interpreted` world).
//
// componentize-js takes seconds to build a component, too long for every
// save. `refract dev` builds this module into a component once (`node
// build.mjs --interpreter OUT`); on each save it appends the project's `.js`
// files to a copy of it (a `refract:source` section), and the host hands
// them back through `files()`. On its first call an instance evaluates the
// project's `app.js` from those files and serves its `projection` export, as
// a component built from `app.js` would.
//
// The modules are evaluated here, not by the engine's module loader (which
// only runs while the component is built), so their `import` and `export`
// statements are rewritten first. What is understood: `import` of a default,
// a namespace or named bindings, and `export` of declarations (with every
// name a `const`, `let` or `var` declares), `default`, lists and re-exports,
// each starting a line. A module may import the
// project's own files by relative path, `../sdk/refract.js` (the helper built
// into the interpreter) and `refract:projection/host@0.2.0`.
import * as refract from "./refract.js";
import * as host from "refract:projection/host@0.2.0";
import { files as sourceFiles } from "refract:projection/source@0.2.0";

/** `spec` imported from the project file `from`, as a path in the project. */
function resolve(from, spec) {
  const parts = from.split("/").slice(0, -1);
  for (const part of spec.split("/")) {
    if (part === "..") parts.length ? parts.pop() : parts.push("..");
    else if (part !== ".") parts.push(part);
  }
  return parts.join("/");
}

const IDENT = String.raw`[A-Za-z_$][\w$]*`;
const FROM = String.raw`\s*from\s*["']([^"']+)["']`;

/** `a, b as c` (an import or export list) as [[local, exported]...]. */
function list(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const [name, alias] = s.split(/\s+as\s+/);
      return [name.trim(), (alias ?? name).trim()];
    });
}

/** The names a `const`, `let` or `var` statement declares after its first
 * one, scanned from `at` (just past the first name) to the statement's end:
 * `export let a = f(1, 2), b;` exports `b` too. Commas inside brackets,
 * strings and comments separate nothing; the statement ends at a `;`, or at
 * a line break that neither the line's last character nor the next line's
 * first continues. */
function laterDeclarators(text, at) {
  const names = [];
  // The next name, past blanks and comments.
  const name = new RegExp(String.raw`^(?:\s|/\*[\s\S]*?\*/|//[^\n]*\n)*(${IDENT})`);
  let depth = 0;
  let last = "";
  for (let i = at; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      for (i++; i < text.length && text[i] !== c; i++) if (text[i] === "\\") i++;
      last = c;
    } else if (c === "/" && text[i + 1] === "/") {
      const end = text.indexOf("\n", i);
      i = (end < 0 ? text.length : end) - 1;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? text.length : end + 1;
    } else if ("([{".includes(c)) {
      depth++;
      last = c;
    } else if (")]}".includes(c)) {
      if (depth === 0) break;
      depth--;
      last = c;
    } else if (depth > 0) {
      if (!/\s/.test(c)) last = c;
    } else if (c === ";") {
      break;
    } else if (c === "\n") {
      const continued = ",=+-*/%&|^!?:<>.~".includes(last) || /^\s*[,=]/.test(text.slice(i + 1, i + 200));
      if (!continued) break;
    } else if (c === ",") {
      const next = name.exec(text.slice(i + 1, i + 200));
      if (next) names.push(next[1]);
      last = c;
    } else if (!/\s/.test(c)) {
      last = c;
    }
  }
  return names;
}

/** The same number of lines as `text`, so errors keep their line numbers. */
const lines = (text) => "\n".repeat(text.split("\n").length - 1);

/** A module's source with `import` and `export` statements rewritten into
 * calls of `__import(spec)` and assignments to `__exports`. */
function rewrite(source) {
  const exported = [];
  let body = source
    // import x, { a, b as c } from "m";  import * as ns from "m";  import x from "m";
    .replace(
      new RegExp(String.raw`^([ \t]*)import\s+(?:(${IDENT})\s*,?\s*)?(?:\*\s*as\s+(${IDENT})|\{([^}]*)\})?${FROM}\s*;?`, "gm"),
      (all, indent, def, ns, names, spec) => {
        const m = JSON.stringify(spec);
        const parts = [];
        if (def) parts.push(`const ${def} = __import(${m}).default;`);
        if (ns) parts.push(`const ${ns} = __import(${m});`);
        if (names !== undefined) {
          const pairs = list(names).map(([name, local]) => (name === local ? name : `${name}: ${local}`));
          parts.push(`const { ${pairs.join(", ")} } = __import(${m});`);
        }
        if (!parts.length) parts.push(`__import(${m});`);
        return indent + parts.join(" ") + lines(all);
      },
    )
    // import "m";
    .replace(new RegExp(String.raw`^([ \t]*)import\s*["']([^"']+)["']\s*;?`, "gm"), (all, indent, spec) => {
      return `${indent}__import(${JSON.stringify(spec)});` + lines(all);
    })
    // export * from "m";  export { a, b as c } from "m";
    .replace(new RegExp(String.raw`^([ \t]*)export\s+(?:\*|\{([^}]*)\})${FROM}\s*;?`, "gm"), (all, indent, names, spec) => {
      const m = JSON.stringify(spec);
      if (names === undefined) return `${indent}Object.assign(__exports, __import(${m}));` + lines(all);
      const sets = list(names).map(([name, as]) => `__exports[${JSON.stringify(as)}] = __m[${JSON.stringify(name)}];`);
      return `${indent}{ const __m = __import(${m}); ${sets.join(" ")} }` + lines(all);
    })
    // export { a, b as c };
    .replace(/^([ \t]*)export\s*\{([^}]*)\}\s*;?/gm, (all, indent, names) => {
      exported.push(...list(names));
      return indent + lines(all);
    })
    // export default ...
    .replace(/^([ \t]*)export\s+default\s+/gm, "$1__exports.default = ")
    // export const x = ..., y = ...; export function f() {}, export class C {}
    .replace(
      new RegExp(String.raw`^([ \t]*)export\s+((?:const|let|var|class|(?:async\s+)?function\s*\*?)\s+)(${IDENT})`, "gm"),
      (all, indent, kind, name, offset, text) => {
        const declares = /^(const|let|var)\b/.test(kind);
        const names = [name, ...(declares ? laterDeclarators(text, offset + all.length) : [])];
        exported.push(...names.map((n) => [n, n]));
        return indent + kind + name;
      },
    );
  const leftover = /^[ \t]*(import|export)\b[^\n]*/m.exec(body);
  if (leftover && !/^[ \t]*import\s*\(/.test(leftover[0])) {
    throw new SyntaxError(`refract dev's interpreter cannot rewrite this statement: ${leftover[0].trim()}`);
  }
  const sets = exported.map(([local, as]) => `__exports[${JSON.stringify(as)}] = ${local};`).join(" ");
  return body + `\n${sets}`;
}

let loaded = null;

/** The project's `projection`, from its `app.js`, evaluated on first use. */
function load() {
  if (loaded) return loaded;
  const files = new Map(sourceFiles());
  const modules = new Map();
  const builtin = new Map([
    ["../sdk/refract.js", refract],
    ["refract:projection/host@0.2.0", host],
  ]);
  const importFrom = (from) => (spec) => {
    const path = spec.startsWith(".") ? resolve(from, spec) : spec;
    if (builtin.has(path)) return builtin.get(path);
    if (modules.has(path)) return modules.get(path);
    if (!files.has(path)) {
      throw new Error(
        `${from}: cannot import "${spec}" in refract dev's interpreter: it has the project's own .js files, ` +
          `../sdk/refract.js and refract:projection/host@0.2.0 (run \`refract dev --componentize\` for other modules)`,
      );
    }
    const exports = {};
    modules.set(path, exports);
    let run;
    try {
      // Indirect eval, with the wrapper on the source's first line: line
      // numbers in errors are the file's own.
      run = (0, eval)(`(function (__import, __exports) {${rewrite(files.get(path))}\n})\n//# sourceURL=${path}`);
    } catch (err) {
      if (err instanceof SyntaxError) {
        const at = err.lineNumber ? `:${err.lineNumber}` : "";
        throw new SyntaxError(`${path}${at}: ${err.message}`);
      }
      throw err;
    }
    run(importFrom(path), exports);
    return exports;
  };
  if (!files.has("app.js")) throw new Error("refract dev handed over no app.js");
  const app = importFrom("app.js")("./app.js");
  if (!app.projection) {
    throw new Error("app.js exports no `projection` (`export const projection = exportProjection({ ... })`)");
  }
  loaded = app.projection;
  return loaded;
}

/** The exported `projection` interface, served by the project's own. */
export const projection = {
  describe() {
    try {
      return load().describe();
    } catch (err) {
      // The project's own error, at its line, in the host's log (through
      // the `log` import: the component has no stdio), before the trap.
      const frames = String(err?.stack ?? "")
        .split("\n")
        .filter((l) => l.trim() && !/refract_interpreter\.js|initializer\.js/.test(l));
      const summary = `${err?.name ?? "Error"}: ${err?.message ?? err}`;
      if (frames.length) host.log("error", [summary, ...frames].join("\n"));
      // Last: the line the host's load error repeats.
      host.log("error", summary);
      throw err;
    }
  },
  handle(batch) {
    return load().handle(batch);
  },
};
