// Offline widget loading for the static book (ours, not from npm; see book/vendor/README.md).
//
// myst-nb puts, on every page with widget state, in this order: require.js, this script,
// and @jupyter-widgets/html-manager's embed-amd.js (`nb_ipywidgets_js` in _config.yml).
// The html-manager loads each widget's frontend module with `require([name])` and, when that
// fails, from a CDN (`${cdn}${name}@${version}/dist/index.js`). Here we
//   1. map the module `anywidget` to the vendored copy, found relative to THIS script's URL,
//      so it works for pages at any depth (book/intro.html, chapters/NAME.html);
//   2. give the html-manager's own modules a URL in the vendored folder: its webpack bundle
//      finds its assets (the FontAwesome fonts of the widget CSS) beside the URL that
//      require.js computes for the module `@jupyter-widgets/html-manager/dist/...`, which
//      would otherwise be a folder `@jupyter-widgets/` beside the page (404s);
//   3. make "the CDN" a folder beside this script that does not exist, so an unknown widget
//      module fails with a local 404 and a console error, never with a network request.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !window.requirejs) {
    console.error("widgets-config.js: load it with a <script src> after require.js");
    return;
  }
  var base = script.src.replace(/[^/]*$/, ""); // absolute URL of .../vendor/
  window.requirejs.config({
    paths: {
      // require.js appends ".js"
      anywidget: base + "anywidget-0.11.0/index",
      "@jupyter-widgets/html-manager/dist": base + "html-manager-1.0.15",
    },
  });
  script.setAttribute("data-jupyter-widgets-cdn", base + "no-cdn/");
})();
