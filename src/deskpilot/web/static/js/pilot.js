// deskpilot Pilot and Knowledge pages: copy buttons, the ticket picker, popovers, focus after step swaps.
// Every page works without this file; it only adds conveniences.
(function () {
  "use strict";

  // Copy buttons stay hidden without JavaScript (there is nothing they could do); show them here and after swaps.
  function revealCopyButtons(root) {
    root.querySelectorAll("[data-copy][hidden]").forEach(function (button) { button.hidden = false; });
  }

  function copyText(text) {
    // navigator.clipboard exists only in secure contexts (HTTPS or localhost); fall back to a hidden textarea.
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return fallbackCopy(text); });
    }
    return Promise.resolve(fallbackCopy(text));
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.value !== undefined && source.tagName === "TEXTAREA" ? source.value : source.textContent;
      var label = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", label);
      copyText(text).then(function (ok) {
        button.textContent = ok ? "Copied" : "Copy failed: select the text";
        window.setTimeout(function () { button.textContent = label; }, 2500);
      });
      return;
    }
    // Ticket picker on the intake form: a result fills the ticket number.
    var ticket = event.target.closest("[data-ticket-id]");
    if (ticket) {
      var input = document.getElementById("intake-ticket");
      if (input) {
        input.value = ticket.getAttribute("data-ticket-id");
        input.focus();
      }
      var results = document.getElementById("ticket-results");
      if (results) results.textContent = "Ticket #" + ticket.getAttribute("data-ticket-id") + " selected.";
    }
  });

  // Popovers are <details>: Escape closes the open one and gives focus back to its button.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details[data-popover][open], details.popover[open]").forEach(function (d) {
      d.open = false;
      var summary = d.querySelector("summary");
      if (summary) summary.focus();
    });
  });
  // One popover open at a time, so panels do not pile up on narrow screens.
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!(opened instanceof HTMLDetailsElement) || !opened.open || !opened.classList.contains("popover")) return;
    document.querySelectorAll("details.popover[open]").forEach(function (d) { if (d !== opened) d.open = false; });
    var first = opened.querySelector("textarea, select, input:not([type=hidden])");
    if (first) first.focus();
  }, true);

  // Plain forms that take a while (starting a session asks the LLM): show it and prevent a second submit.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("hx-post")) return;
    var button = form.querySelector("[data-busy-label]");
    if (!button) return;
    // Disabled after the submit event so the browser still sends the form.
    window.setTimeout(function () {
      button.disabled = true;
      button.textContent = button.getAttribute("data-busy-label");
    }, 0);
  });

  // After a step is answered the whole session region is replaced: move focus to the new step (or the error)
  // so keyboard and screen reader users continue where the content changed.
  document.body.addEventListener("htmx:afterSettle", function (event) {
    revealCopyButtons(document);
    var target = event.detail && event.detail.target;
    if (!target || target.id !== "session") return;
    var focus = document.getElementById("session-error") || document.getElementById("current-step-title");
    if (focus) {
      if (!focus.hasAttribute("tabindex")) focus.setAttribute("tabindex", "-1");
      focus.focus();
      focus.scrollIntoView({ block: "nearest" });
    }
  });

  revealCopyButtons(document);
})();
