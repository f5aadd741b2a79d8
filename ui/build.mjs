// Bundles src/main.ts (and the CSS it imports, uPlot's included) into dist/assets/ with
// content-hashed names, then writes dist/index.html pointing at them. query_api/ui.py
// serves dist/. `node build.mjs --watch` rebuilds on change.
import * as esbuild from "esbuild";
import { readFile, readdir, rm, writeFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, "src");
const dist = path.join(here, "dist");

// User data reaches the page only through textContent and DOM properties; an HTML sink
// in the source is a bug (see docs/UI.md).
const HTML_SINKS = /\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b/;
async function checkNoHtmlSinks(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) await checkNoHtmlSinks(file);
    else if (/\.ts$/.test(entry.name)) {
      const lines = (await readFile(file, "utf8")).split("\n");
      lines.forEach((line, i) => {
        if (HTML_SINKS.test(line)) throw new Error(`${path.relative(here, file)}:${i + 1}: HTML sink: ${line.trim()}`);
      });
    }
  }
}

const writeIndex = {
  name: "index-html",
  setup(build) {
    build.onEnd(async (result) => {
      if (result.errors.length) return;
      const outputs = Object.keys(result.metafile.outputs).map((f) => path.basename(f));
      const js = outputs.find((f) => /^main-.*\.js$/.test(f));
      const css = outputs.find((f) => /^main-.*\.css$/.test(f));
      const template = await readFile(path.join(src, "index.html"), "utf8");
      await writeFile(
        path.join(dist, "index.html"),
        template.replace("%CSS%", `/assets/${css}`).replace("%JS%", `/assets/${js}`),
      );
      console.log(`ui: built dist/index.html, dist/assets/${js}, dist/assets/${css}`);
    });
  },
};

await checkNoHtmlSinks(src);
await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, "assets"), { recursive: true });
const options = {
  entryPoints: [path.join(src, "main.ts")],
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  outdir: path.join(dist, "assets"),
  entryNames: "[name]-[hash]",
  minify: true,
  sourcemap: true,
  metafile: true,
  logLevel: "warning",
  plugins: [writeIndex],
};
if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log("ui: watching src/ (Ctrl-C to stop)");
} else {
  await esbuild.build(options);
}
