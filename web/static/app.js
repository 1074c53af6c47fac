// LLM Gateway web UI: small enhancements shared by every page. All script lives in files like
// this one: the Content-Security-Policy allows no inline script at all.
"use strict";

(function () {
  // Times are written in UTC by the server; show them in the reader's own time zone.
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var value = el.getAttribute("datetime");
      var date = value ? new Date(value) : null;
      if (!date || isNaN(date.getTime())) return;
      el.textContent = date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      el.title = value;
    });
  }

  function flashButton(button, text) {
    var before = button.textContent;
    button.textContent = text;
    setTimeout(function () { button.textContent = before; }, 1600);
  }

  // Copy to the clipboard, with the old selection way where the clipboard API is unavailable.
  function copyText(text, button, source) {
    function fallback() {
      if (source && source.select) {
        source.select();
        var ok = document.execCommand && document.execCommand("copy");
        if (button) flashButton(button, ok ? "Copied" : "Press Ctrl+C");
      } else if (button) {
        flashButton(button, "Copy failed");
      }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        if (button) flashButton(button, "Copied");
      }, fallback);
    } else {
      fallback();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (source) copyText(source.value !== undefined ? source.value : source.textContent, button, source);
      return;
    }
    // A click elsewhere closes an open confirmation panel.
    document.querySelectorAll("details.confirm[open]").forEach(function (details) {
      if (!details.contains(event.target)) details.removeAttribute("open");
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.confirm[open]").forEach(function (details) {
      details.removeAttribute("open");
    });
  });

  // A key shown once: selected and in view, ready to copy.
  var revealed = document.getElementById("revealed-secret");
  if (revealed) {
    revealed.addEventListener("focus", function () { revealed.select(); });
    revealed.scrollIntoView({ block: "center" });
  }

  localTimes(document);
  window.Gateway = { localTimes: localTimes, copyText: copyText };
})();
