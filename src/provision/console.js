// The administration console's only script (progressive: every form works
// without it). Served as a file: the CSP allows no inline script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Ask before a deletion.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.getAttribute("data-confirm"))) {
        ev.preventDefault();
      }
    });
  });
  // Move the keyboard focus to an error, so it is read first.
  var err = document.getElementById("error");
  if (err) {
    err.setAttribute("tabindex", "-1");
    err.focus();
  }
});
