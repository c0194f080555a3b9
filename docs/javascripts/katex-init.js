// Render the math that pymdownx.arithmatex (generic mode) leaves in the page, with KaTeX:
// from javascripts/vendor/katex/ when the build copied a local KaTeX there (offline viewing,
// see scripts/docs_hooks.py), else from a CDN.
(function () {
  var here = document.currentScript.src.replace(/katex-init\.js(\?.*)?$/, "");
  var sources = [here + "vendor/katex/", "https://cdn.jsdelivr.net/npm/katex@0.16.47/dist/"];

  function render() {
    document.querySelectorAll(".arithmatex").forEach(function (el) {
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      tex = tex.replace(/^\\[\[(]/, "").replace(/\\[\])]$/, "");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: false });
      } catch (e) { /* leave the TeX source visible */ }
    });
  }

  function load(i) {
    if (i >= sources.length) return;
    var css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = sources[i] + "katex.min.css";
    var js = document.createElement("script");
    js.src = sources[i] + "katex.min.js";
    js.onload = function () { document.head.appendChild(css); render(); };
    js.onerror = function () { js.remove(); load(i + 1); };
    document.head.appendChild(js);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { load(0); });
  } else {
    load(0);
  }
})();
