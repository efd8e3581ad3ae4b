// deskpilot console: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  var body = document.body;

  // htmx carries some attributes of a swapped element over to its replacement; "style" among them would be an
  // inline style, which the console's CSP refuses (a textarea the user resized has one). Settle without it.
  if (window.htmx) {
    window.htmx.config.attributesToSettle = window.htmx.config.attributesToSettle.filter(function (name) {
      return name !== "style";
    });
  }

  // Navigation menu on narrow screens: without JS the link jumps to #site-nav (shown by :target).
  var toggle = document.querySelector("[data-menu-toggle]");
  var nav = document.getElementById("site-nav");
  function setMenu(open) {
    body.classList.toggle("nav-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }
  if (toggle && nav) {
    toggle.setAttribute("role", "button");
    toggle.setAttribute("aria-expanded", "false");
    toggle.addEventListener("click", function (event) {
      event.preventDefault();
      var open = !body.classList.contains("nav-open");
      setMenu(open);
      if (open) {
        var first = nav.querySelector("a");
        if (first) first.focus();
      }
    });
    toggle.addEventListener("keydown", function (event) {
      if (event.key === " ") { event.preventDefault(); toggle.click(); }
    });
    var close = nav.querySelector(".nav-close");
    if (close) {
      close.addEventListener("click", function (event) {
        event.preventDefault();
        setMenu(false);
        toggle.focus();
      });
    }
  }

  // Dropdowns are <details>: keep one open at a time, close on outside click and on Escape.
  var dropdowns = Array.prototype.slice.call(document.querySelectorAll("[data-dropdown]"));
  dropdowns.forEach(function (d) {
    d.addEventListener("toggle", function () {
      if (!d.open) return;
      dropdowns.forEach(function (other) { if (other !== d) other.open = false; });
    });
  });
  document.addEventListener("click", function (event) {
    dropdowns.forEach(function (d) { if (d.open && !d.contains(event.target)) d.open = false; });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    dropdowns.forEach(function (d) {
      if (d.open) { d.open = false; d.querySelector("summary").focus(); }
    });
    document.querySelectorAll("details.confirm[open]").forEach(function (d) {
      d.open = false; d.querySelector("summary").focus();
    });
    if (body.classList.contains("nav-open")) { setMenu(false); if (toggle) toggle.focus(); }
  });

  // The one-time token secret: select it on focus, copy it with a button.
  document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    var status = document.getElementById("copy-status");
    if (!input) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      function done(ok) {
        if (status) status.textContent = ok ? "Copied to the clipboard." : "Copy failed: select the token and copy it.";
      }
      input.select();
      // navigator.clipboard exists only in secure contexts (HTTPS or localhost).
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(function () { done(true); }, function () { done(false); });
      } else {
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        done(ok);
      }
    });
  });

  // Notification bell: the server pushes an event per change; the panel then re-fetches itself (htmx),
  // so the badge always shows the server's count rather than a client-side tally.
  var streamUrl = body.getAttribute("data-stream");
  function shownUnread() {
    var badge = document.querySelector("#bell-count [data-unread]");
    return badge ? parseInt(badge.getAttribute("data-unread"), 10) : 0;
  }
  if (streamUrl && window.EventSource) {
    var source = new EventSource(streamUrl);
    var refresh = function () { body.dispatchEvent(new CustomEvent("deskpilot:notify")); };
    source.addEventListener("notification", refresh);
    source.addEventListener("notifications.read", refresh);
    // Sent on every (re)connect: re-read the bell only if it changed since the page or the last event.
    source.addEventListener("hello", function (event) {
      body.setAttribute("data-stream-state", "open");
      var unread = null;
      try { unread = JSON.parse(event.data).unread; } catch (e) { unread = null; }
      if (unread !== shownUnread()) refresh();
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
})();
