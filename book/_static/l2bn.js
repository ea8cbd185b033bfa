// Accessibility repairs of the theme's markup (tests/test_book.py runs axe-core on every page):
// - a control whose visible text differs from its aria-label (the search button shows
//   "Search Ctrl+K", the folded cells "Show code cell content") is named by its text instead;
// - icons inside a labelled button (the colour-mode switch) are decoration, not text;
// - the bibliography's role="list" needs role="listitem" children (docutils writes the
//   deprecated role doc-biblioentry on them).
(function () {
  function repair() {
    document.querySelectorAll("button[aria-label], summary[aria-label], a[aria-label]").forEach(function (el) {
      var text = (el.innerText || "").trim();
      if (text && el.getAttribute("aria-label").indexOf(text) === -1) {
        el.removeAttribute("aria-label");
      }
    });
    document.querySelectorAll("button[aria-label] i[title]").forEach(function (el) {
      el.removeAttribute("title");
      el.setAttribute("aria-hidden", "true");
    });
    document.querySelectorAll('[role="list"] > [role="doc-biblioentry"]').forEach(function (el) {
      el.setAttribute("role", "listitem");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", repair);
  } else {
    repair();
  }
  window.addEventListener("load", repair);
})();
