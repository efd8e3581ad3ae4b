// deskpilot Chat page: sends messages, reads the reply as an AI SDK UI message stream (fetch + a small SSE
// parser that remembers the last event id), and keeps the task lane, "What we know", the suggested fix, branches,
// suggested runbooks and approval cards up to date from the stream's data parts. The branch sidebar switches,
// marks and revives branches (/chats/{id}/branches…) and then shows the active branch's conversation.
// Model text is only ever set with textContent: nothing the model writes becomes markup.
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root || !window.fetch || !window.TextDecoder) return;

  var API = "/api/v1";
  var sid = root.getAttribute("data-session");
  var csrf = root.getAttribute("data-csrf");
  var canWork = root.getAttribute("data-can-work") === "true";
  var isOpen = root.getAttribute("data-open") === "true";
  var state;
  try { state = JSON.parse(root.getAttribute("data-state") || "{}"); } catch (e) { state = {}; }
  state.facts = state.facts || [];
  state.branches = state.branches || [];

  function $(id) { return document.getElementById(id); }
  var els = {
    title: $("chat-title"), usage: $("chat-usage"), model: $("chat-model"), busy: $("chat-busy"),
    flows: $("chat-flows"), error: $("chat-error"), fork: $("chat-fork"), messages: $("chat-messages"),
    empty: $("chat-empty"), approvals: $("chat-approvals"), fix: $("chat-fix"), composer: $("chat-composer"),
    input: $("chat-input"), send: $("chat-send"), lane: $("chat-lane"), factList: $("chat-fact-list"),
    factsEmpty: $("chat-facts-empty"), noteForm: $("chat-note-form"), branches: $("chat-branches"),
    branchList: $("chat-branch-list"), attachments: $("chat-attachments"), attachInput: $("chat-attach")
  };

  var FACT_SOURCES = {
    user_note: "User note", question: "From question", diagnostic_check: "Diagnostic check",
    ai_synthesis: "AI synthesis"
  };
  var FIX_STATUS = {
    proposed: "Proposed", applied_pending: "Verifying", applied_success: "Worked",
    applied_partial: "Partly worked", applied_failure: "Didn't work", dismissed: "Dismissed"
  };
  var PROPOSAL_TEXT = {
    success: "AI thinks it worked — confirm?", partial: "AI thinks it partly worked — confirm?",
    failure: "AI thinks it didn't work — confirm?"
  };
  var ITEM_STATUS = { pending: "To do", done: "Done", skipped: "Skipped" };

  // --- small helpers ----------------------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function button(label, className, onClick, ariaLabel) {
    var b = el("button", "btn btn-small " + (className || "btn-secondary"), label);
    b.type = "button";
    if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
    b.addEventListener("click", onClick);
    return b;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function problem(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      var error = new Error(body.detail || body.title || "The request failed (" + response.status + ").");
      error.code = body.code;
      error.status = response.status;
      return error;
    });
  }

  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: { "Accept": "application/json", "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (response) {
      if (!response.ok) return problem(response).then(function (error) { throw error; });
      return response.status === 204 ? null : response.json();
    });
  }

  function showError(text) {
    els.error.textContent = text;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.textContent = "";
    els.error.hidden = true;
  }

  function failed(error) {
    showError(error && error.message ? error.message : "Something went wrong; try again.");
  }

  // --- reply text: prose with its line breaks, fenced code as <pre> (web/routes/chat.py splits it alike) --

  function segments(text) {
    var out = [], prose = [], code = null;
    function pushProse() {
      var joined = prose.join("\n");
      if (joined.trim()) out.push({ kind: "text", text: joined.replace(/^\n+|\n+$/g, "") });
      prose = [];
    }
    (text || "").split("\n").forEach(function (line) {
      if (/^\s*```/.test(line)) {
        if (code === null) { pushProse(); code = []; } else { out.push({ kind: "code", text: code.join("\n") }); code = null; }
        return;
      }
      (code === null ? prose : code).push(line);
    });
    if (code !== null) out.push({ kind: "code", text: code.join("\n") }); else pushProse();
    return out;
  }

  function renderText(body, text) {
    clear(body);
    segments(text).forEach(function (segment) {
      if (segment.kind === "code") {
        var pre = el("pre", "code");
        pre.appendChild(el("code", null, segment.text));
        body.appendChild(pre);
      } else {
        body.appendChild(el("p", "chat-text", segment.text));
      }
    });
  }

  // --- transcript -------------------------------------------------------------------------------------

  function findMessage(id) {
    if (!id) return null;
    var items = els.messages.querySelectorAll("[data-message-id]");
    for (var i = 0; i < items.length; i++) if (items[i].getAttribute("data-message-id") === id) return items[i];
    return null;
  }

  function addMessage(role, id, text, images) {
    if (els.empty) { els.empty.remove(); els.empty = null; }
    var item = el("li", "chat-msg chat-" + role);
    if (id) item.setAttribute("data-message-id", id);
    item.appendChild(el("span", "chat-who", role === "user" ? "You" : "Copilot"));
    var body = el("div", "chat-body");
    item.appendChild(body);
    renderText(body, text || "");
    if (id && images) addImages(item, keptImages(id, images), true);
    els.messages.appendChild(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  // The images sent with a message, under it: those kept on the server each link to itself at full size; those
  // just sent show from the page's own copy until the conversation is read again.
  function addImages(item, urls, linked) {
    var strip = el("div", "chat-images");
    urls.forEach(function (url, i) {
      var frame = el(linked ? "a" : "span", "chat-image");
      if (linked) {
        frame.href = url;
        frame.target = "_blank";
        frame.rel = "noopener";
      }
      var img = thumbnail(url, "Image " + (i + 1) + " of " + urls.length + " sent with this message");
      img.loading = "lazy";
      frame.appendChild(img);
      strip.appendChild(frame);
    });
    item.appendChild(strip);
  }

  function keptImages(id, count) {
    var urls = [];
    for (var n = 1; n <= count; n++) urls.push(API + "/sessions/" + sid + "/messages/" + id + "/images/" + n);
    return urls;
  }

  function thumbnail(url, alt) {
    var img = document.createElement("img");
    img.src = url;
    img.alt = alt;
    return img;
  }

  // --- the turn being streamed --------------------------------------------------------------------------

  var turn = { busy: false, lastId: 0, turnId: null, bubble: null, text: "", done: false, retries: 0,
               pendingUser: null, frame: 0 };
  // Each read of the conversation (after a branch change) takes a number; a turn that starts takes the next, so a
  // read answered after the turn began never replaces the messages the turn added since: it is read again once the
  // turn is over.
  var conversationReads = 0;
  var conversationStale = false;

  function setBusy(busy) {
    if (busy) conversationReads += 1;
    turn.busy = busy;
    els.busy.classList.toggle("is-busy", busy);
    root.setAttribute("data-busy", busy ? "true" : "false");
    if (els.input) els.input.disabled = busy || !isOpen;
    if (els.send) els.send.disabled = busy || !isOpen;
    if (els.attachInput) els.attachInput.disabled = busy || !isOpen;
    setBranchControls();
  }

  function paint() {
    turn.frame = 0;
    if (!turn.bubble) return;
    renderText(turn.bubble.querySelector(".chat-body"), turn.text);
    turn.bubble.scrollIntoView({ block: "nearest" });
  }

  function schedulePaint() {
    if (!turn.frame) turn.frame = window.requestAnimationFrame(paint);
  }

  function bubbleFor(messageId) {
    var bubble = findMessage(messageId) || addMessage("assistant", messageId, "");
    bubble.classList.add("is-streaming");
    return bubble;
  }

  // A turn this page did not start (another tab's, or one running before a reload): its user message, unless
  // the page shows it already, goes before the reply being followed.
  function showFollowedMessage(data) {
    if (!data || !data.message_id || typeof data.text !== "string" || findMessage(data.message_id)) return;
    var item = addMessage("user", data.message_id, data.text);
    if (turn.bubble && turn.bubble.parentNode === els.messages) els.messages.insertBefore(item, turn.bubble);
  }

  function handlePart(part) {
    var data = part.data;
    switch (part.type) {
      case "start":
        // A (re)started message: a live stream from event 0 or a replay of the finished turn tells it whole.
        if (state.session && state.session.status === "paused") state.session.status = "active";  // a message wakes it
        turn.bubble = bubbleFor(part.messageId);
        turn.text = "";
        paint();
        break;
      case "data-turn-info":
        turn.turnId = data.chat_turn_id || turn.turnId;
        break;
      case "data-user-message-id":
        if (turn.pendingUser) { turn.pendingUser.setAttribute("data-message-id", data.message_id); turn.pendingUser = null; }
        else showFollowedMessage(data);
        break;
      case "data-assistant-message-id":
        if (!turn.bubble) turn.bubble = bubbleFor(data.message_id);
        else turn.bubble.setAttribute("data-message-id", data.message_id);
        break;
      case "text-delta":
        if (!turn.bubble) turn.bubble = bubbleFor(null);
        turn.text += part.delta || "";
        schedulePaint();
        break;
      case "text-end":
        paint();
        break;
      case "data-message-final":
        turn.text = data.text || "";
        paint();
        break;
      case "data-suggested-flows": renderFlows(data || []); break;
      case "data-task-lane": state.lane = laneOf(data); renderLane(); break;
      case "data-facts": mergeFacts(data); renderFacts(); break;
      case "data-suggested-fix": setFix(data); break;
      case "data-fix-outcome-proposal":
      case "data-fix-outcome": applyProposal(data); break;
      case "data-fork": applyFork(data); break;
      case "data-thread-title-update": setTitle(data.title); break;
      case "data-interrupt-request": renderInterrupt(data); break;
      case "data-token-usage": addUsage(data); break;
      case "error": showError(part.errorText || "The reply failed."); break;
      default: break;
    }
  }

  function onData(data) {
    if (data === "[DONE]") { turn.done = true; return; }
    var part;
    try { part = JSON.parse(data); } catch (e) { return; }
    if (part && typeof part === "object") handlePart(part);
  }

  // Server-sent events over fetch: frames are separated by a blank line; `id:` is remembered for reconnects.
  function readStream(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function block(text) {
      var id = null, lines = [];
      text.split("\n").forEach(function (line) {
        if (!line || line.charAt(0) === ":") return;
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.charAt(0) === " ") value = value.slice(1);
        if (field === "id") id = value;
        else if (field === "data") lines.push(value);
      });
      if (id !== null && /^\d+$/.test(id)) turn.lastId = parseInt(id, 10);
      if (lines.length) onData(lines.join("\n"));
    }
    function drain(final) {
      buffer = buffer.replace(/\r\n?/g, "\n");
      var at;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        var text = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        block(text);
      }
      if (final && buffer.trim()) { block(buffer); buffer = ""; }
    }
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) { buffer += decoder.decode(); drain(true); return; }
        buffer += decoder.decode(chunk.value, { stream: true });
        drain(false);
        return pump();
      });
    }
    return pump();
  }

  function finishTurn() {
    if (turn.frame) { window.cancelAnimationFrame(turn.frame); paint(); }
    if (turn.bubble) turn.bubble.classList.remove("is-streaming");
    turn.bubble = null;
    setBusy(false);
    refreshPanels();
    if (conversationStale) { conversationStale = false; loadConversation(); }
    if (els.input && !els.input.disabled) els.input.focus();
  }

  function consume(response) {
    turn.done = false;
    return readStream(response).then(afterStream, afterStream);
  }

  function afterStream() {
    // The connection ended before [DONE] (a proxy, a network blip): pick the turn up where it stopped.
    if (!turn.done && turn.turnId && turn.retries < 3) {
      turn.retries += 1;
      return new Promise(function (resolve) { window.setTimeout(resolve, 400 * turn.retries); })
        .then(function () { return follow(turn.turnId, turn.lastId); });
    }
    finishTurn();
  }

  function follow(turnId, after) {
    setBusy(true);
    var url = API + "/sessions/" + sid + "/stream" + (turnId ? "?turn_id=" + encodeURIComponent(turnId) : "");
    return fetch(url, {
      credentials: "same-origin", headers: { "Accept": "text/event-stream", "Last-Event-ID": String(after) }
    }).then(function (response) {
      if (response.status === 204) { finishTurn(); return; }
      if (!response.ok) return problem(response).then(function (error) { finishTurn(); failed(error); });
      return consume(response);
    }, function () { afterStream(); });
  }

  function stream(path, body, onRefused) {
    clearError();
    setBusy(true);
    turn.lastId = 0;
    turn.turnId = null;
    turn.retries = 0;
    return fetch(API + path, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Accept": "text/event-stream", "Content-Type": "application/json", "X-CSRF-Token": csrf }
    }).then(function (response) {
      if (response.ok) return consume(response);
      return problem(response).then(function (error) {
        setBusy(false);
        if (onRefused) onRefused(error);
        failed(error);
        // Another turn is still answering (another tab, a reload): show that one as it finishes.
        if (error.code === "THREAD_BUSY") follow(null, 0);
      });
    }, function () {
      setBusy(false);
      if (onRefused) onRefused(null);
      showError("The server could not be reached; nothing was sent.");
    });
  }

  // --- images for the next message (UC-003): attached or pasted, shown before they are sent ----------------

  var IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
  var MAX_IMAGES = 4;
  var MAX_IMAGE_BYTES = 3932160;  // 5 MiB of base64 text, the server's limit
  var attached = [];  // { mediaType, data: base64, url: data: URL, ready: Promise }

  function attach(files) {
    Array.prototype.slice.call(files || []).forEach(function (file) {
      var name = file.name || "The pasted image";
      if (IMAGE_TYPES.indexOf(file.type) < 0) { showError(name + " is not a PNG, JPEG, GIF or WebP image."); return; }
      if (attached.length >= MAX_IMAGES) { showError("A message may carry at most " + MAX_IMAGES + " images."); return; }
      if (file.size > MAX_IMAGE_BYTES) { showError(name + " is larger than 3.75 MB."); return; }
      var entry = { mediaType: file.type, data: null, url: null };
      entry.ready = new Promise(function (resolve) {
        var reader = new FileReader();
        reader.onload = function () {
          entry.url = String(reader.result);
          entry.data = entry.url.slice(entry.url.indexOf(",") + 1);
          renderAttachments();
          resolve();
        };
        reader.onerror = function () {
          attached.splice(attached.indexOf(entry), 1);
          showError(name + " could not be read.");
          renderAttachments();
          resolve();
        };
        reader.readAsDataURL(file);
      });
      attached.push(entry);
    });
    renderAttachments();
  }

  function renderAttachments() {
    if (!els.attachments) return;
    clear(els.attachments);
    attached.forEach(function (entry, i) {
      var item = el("div", "chat-attachment");
      if (entry.url) item.appendChild(thumbnail(entry.url, "Image " + (i + 1) + " to send"));
      item.appendChild(button("Remove", "btn-secondary", function () {
        attached.splice(attached.indexOf(entry), 1);
        renderAttachments();
      }, "Remove image " + (i + 1)));
      els.attachments.appendChild(item);
    });
  }

  function send(text, images) {
    var user = addMessage("user", null, text);
    if (images.length) addImages(user, images.map(function (entry) { return entry.url; }), false);
    turn.pendingUser = user;
    els.input.value = "";
    var body = { text: text };
    if (images.length) {
      body.images = images.map(function (entry) { return { media_type: entry.mediaType, data: entry.data }; });
    }
    return stream("/sessions/" + sid + "/messages", body, function () {
      user.remove();
      turn.pendingUser = null;
      if (!els.input.value) els.input.value = text;
      // Refused (or not sent): the images wait for the next try.
      attached = images.concat(attached).slice(0, MAX_IMAGES);
      renderAttachments();
    });
  }

  if (els.attachInput) {
    els.attachInput.addEventListener("change", function () {
      attach(els.attachInput.files);
      els.attachInput.value = "";
    });
  }

  if (els.composer && els.input) {
    if (els.attachInput) {
      els.input.addEventListener("paste", function (event) {
        var files = event.clipboardData ? Array.prototype.slice.call(event.clipboardData.files || []) : [];
        var images = files.filter(function (file) { return IMAGE_TYPES.indexOf(file.type) >= 0; });
        if (!images.length) return;
        event.preventDefault();
        attach(images);
      });
    }
    els.composer.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = els.input.value.trim();
      if ((!text && !attached.length) || turn.busy || !isOpen) return;
      var images = attached;
      Promise.all(images.map(function (entry) { return entry.ready; })).then(function () {
        if (turn.busy) return;
        var ready = images.filter(function (entry) { return entry.data; });
        if (!text && !ready.length) return;
        attached = [];
        renderAttachments();
        send(text, ready);
      });
    });
    els.input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      if (typeof els.composer.requestSubmit === "function") els.composer.requestSubmit();
      else els.composer.dispatchEvent(new Event("submit", { cancelable: true }));
    });
  }

  // --- header: title, usage, suggested runbooks ----------------------------------------------------------

  function setTitle(title) {
    if (!title) return;
    els.title.textContent = title;
    var rest = document.title.indexOf(" · Chat");
    document.title = title + (rest >= 0 ? document.title.slice(rest) : "");
  }

  function addUsage(usage) {
    if (!usage) return;
    var input = parseInt(els.usage.getAttribute("data-input"), 10) + (usage.input_tokens || 0);
    var output = parseInt(els.usage.getAttribute("data-output"), 10) + (usage.output_tokens || 0);
    els.usage.setAttribute("data-input", String(input));
    els.usage.setAttribute("data-output", String(output));
    els.usage.textContent = input.toLocaleString("en") + " in · " + output.toLocaleString("en") + " out";
    showModel(usage);
  }

  function showModel(usage) {
    if (usage && usage.model) els.model.textContent = "Model: " + usage.model;
  }

  function renderFlows(flows) {
    clear(els.flows);
    els.flows.hidden = !flows.length;
    if (!flows.length) return;
    els.flows.appendChild(el("span", "meta-label", "Runbooks"));
    flows.forEach(function (flow) {
      var chip = el("a", "chip chip-flow");
      chip.href = "/knowledge/flows/" + encodeURIComponent(flow.flow_id);
      chip.appendChild(el("span", null, flow.name));
      if (typeof flow.score === "number") chip.appendChild(el("span", "chip-score", Math.round(flow.score * 100) + "% match"));
      els.flows.appendChild(chip);
    });
  }

  // --- task lane -------------------------------------------------------------------------------------

  // The lane itself ({questions, actions}), or null; a part may also carry it as GET /task-lane does ({lane}).
  function laneOf(data) {
    if (data && !data.questions && !data.actions && "lane" in data) return data.lane;
    return data || null;
  }

  function laneItem(kind, item) {
    var status = item.status || "pending";
    var li = el("li", "lane-item lane-" + status);
    li.setAttribute("data-item-id", item.id);
    var head = el("div", "lane-head");
    var title = kind === "question" ? item.text : item.label;
    head.appendChild(el("span", "lane-text", title));
    if (status !== "pending") head.appendChild(el("span", "pill " + (status === "done" ? "pill-ok" : "pill-quiet"), ITEM_STATUS[status]));
    li.appendChild(head);
    if (kind === "question" && item.context) li.appendChild(el("p", "lane-context muted small", item.context));
    if (kind === "action" && item.description) li.appendChild(el("p", "lane-context muted small", item.description));
    if (kind === "action" && item.command) {
      var pre = el("pre", "code small-code");
      pre.appendChild(el("code", null, item.command));
      li.appendChild(pre);
    }
    var note = kind === "question" ? item.answer : item.result;
    if (note) li.appendChild(el("p", "lane-note small", (kind === "question" ? "Answer: " : "Result: ") + note));
    if (!canWork || !isOpen) return li;
    var actions = el("div", "lane-actions");
    if (status === "pending") {
      var input = el("input", "lane-input");
      input.type = "text";
      input.setAttribute("aria-label", (kind === "question" ? "Answer to: " : "Result of: ") + title);
      input.placeholder = kind === "question" ? "Answer (optional)" : "Result (optional)";
      li.appendChild(input);
      actions.appendChild(button(kind === "question" ? "Answered" : "Done", "btn-ok", function () {
        updateItem(item.id, "done", input.value.trim());
      }, "Check: " + title));
      actions.appendChild(button("Skip", "btn-quiet", function () { updateItem(item.id, "skipped", ""); }, "Skip: " + title));
    } else {
      actions.appendChild(button("Undo", "btn-quiet", function () { updateItem(item.id, "pending", ""); }, "Undo: " + title));
    }
    li.appendChild(actions);
    return li;
  }

  function renderLane() {
    var body = els.lane.querySelector(".chat-lane-body");
    clear(body);
    var lane = state.lane;
    var questions = (lane && lane.questions) || [], actions = (lane && lane.actions) || [];
    if (!questions.length && !actions.length) {
      body.appendChild(el("p", "muted small", "Questions and checks the copilot suggests appear here."));
      return;
    }
    [["question", "Questions", questions], ["action", "Checks to run", actions]].forEach(function (group) {
      if (!group[2].length) return;
      body.appendChild(el("h3", "lane-group", group[1]));
      var list = el("ul", "lane-list lane-" + group[0] + "s");
      group[2].forEach(function (item) { list.appendChild(laneItem(group[0], item)); });
      body.appendChild(list);
    });
  }

  function updateItem(itemId, status, note) {
    var body = { status: status };
    if (note) body.note = note;
    api("PATCH", "/sessions/" + sid + "/task-lane/items/" + itemId, body).then(function (result) {
      if (result && "lane" in result) { state.lane = laneOf(result); renderLane(); } else loadLane();
      loadFacts();
    }, failed);
  }

  function loadLane() {
    return api("GET", "/sessions/" + sid + "/task-lane").then(function (result) {
      if (result && "lane" in result) { state.lane = laneOf(result); renderLane(); }
    }, function () { /* not served (yet): the stream's parts keep the lane */ });
  }

  // --- "What we know" ---------------------------------------------------------------------------------

  function factsOf(data) {
    if (!data) return [];
    if (Array.isArray(data)) return data;
    if (Array.isArray(data.facts)) return data.facts;
    if (data.fact) return [data.fact];
    if (data.id) return [data];
    return [];
  }

  function mergeFacts(data) {
    factsOf(data).forEach(function (fact) {
      if (!fact || !fact.id) return;
      var at = state.facts.findIndex(function (f) { return f.id === fact.id; });
      if (fact.deleted_at) { if (at >= 0) state.facts.splice(at, 1); return; }
      if (at >= 0) state.facts[at] = fact; else state.facts.push(fact);
    });
  }

  function factItem(fact) {
    var li = el("li", "chat-fact");
    li.setAttribute("data-fact-id", fact.id);
    var head = el("div", "chat-fact-head");
    head.appendChild(el("span", "pill pill-source-" + fact.source_type, FACT_SOURCES[fact.source_type] || fact.source_type));
    if (fact.summary) head.appendChild(el("strong", "chat-fact-summary", fact.summary));
    li.appendChild(head);
    var text = el("p", "chat-fact-text", fact.text);
    li.appendChild(text);
    if (!canWork || !isOpen) return li;
    var actions = el("div", "lane-actions");
    var editable = fact.editable !== false;
    if (editable) {
      actions.appendChild(button("Edit", "btn-quiet", function () { editFact(li, fact); }, "Edit: " + fact.text));
    }
    actions.appendChild(button("Delete", "btn-danger-quiet", function () {
      api("DELETE", "/sessions/" + sid + "/facts/" + fact.id).then(function () {
        state.facts = state.facts.filter(function (f) { return f.id !== fact.id; });
        renderFacts();
      }, failed);
    }, "Delete: " + fact.text));
    li.appendChild(actions);
    return li;
  }

  function editFact(li, fact) {
    var form = el("form", "stack chat-fact-edit");
    var area = el("textarea");
    area.rows = 2;
    area.value = fact.text;
    area.setAttribute("aria-label", "Fact text");
    form.appendChild(area);
    var row = el("div", "lane-actions");
    var save = el("button", "btn btn-small btn-primary", "Save");
    save.type = "submit";
    row.appendChild(save);
    row.appendChild(button("Cancel", "btn-quiet", function () { renderFacts(); }));
    form.appendChild(row);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = area.value.trim();
      if (!text) return;
      api("PATCH", "/sessions/" + sid + "/facts/" + fact.id, { text: text }).then(function (result) {
        mergeFacts(result && result.fact ? result.fact : Object.assign({}, fact, { text: text }));
        renderFacts();
      }, failed);
    });
    li.replaceChildren(form);
    area.focus();
  }

  function renderFacts() {
    clear(els.factList);
    state.facts.forEach(function (fact) { els.factList.appendChild(factItem(fact)); });
    els.factsEmpty.hidden = state.facts.length > 0;
  }

  function loadFacts() {
    return api("GET", "/sessions/" + sid + "/facts").then(function (result) {
      if (result && Array.isArray(result.facts)) { state.facts = result.facts; renderFacts(); }
    }, function () { /* not served (yet): the stream's parts keep the list */ });
  }

  if (els.noteForm) {
    els.noteForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var area = els.noteForm.querySelector("textarea");
      var text = area.value.trim();
      if (!text) return;
      api("POST", "/sessions/" + sid + "/facts", { text: text }).then(function (result) {
        area.value = "";
        mergeFacts(result);
        renderFacts();
      }, failed);
    });
  }

  // --- suggested fix ------------------------------------------------------------------------------------

  function fixOf(data) {
    if (!data) return null;
    if (data.fix) return data.fix;
    if ("active" in data && !data.id) return data.active;
    return data.id ? data : null;
  }

  function setFix(data) {
    var fix = fixOf(data);
    if (fix) { state.fix = fix; renderFix(); }
  }

  function applyProposal(data) {
    var fix = fixOf(data);
    if (fix && fix.ai_outcome_proposal) { setFix(fix); return; }
    if (!state.fix || !data || !data.outcome) return;
    if (data.fix_id && data.fix_id !== state.fix.id) return;
    state.fix.ai_outcome_proposal = { outcome: data.outcome, reason: data.reason || "", resolution: "open" };
    renderFix();
  }

  function outcome(body) {
    api("PATCH", "/sessions/" + sid + "/suggested-fixes/" + state.fix.id + "/outcome", body).then(function (result) {
      if (result && result.fix) setFix(result.fix); else loadFix();
    }, failed);
  }

  function noteForm(label, submitLabel, onSave) {
    var form = el("form", "fix-note-form");
    var id = "fix-note-" + Math.random().toString(36).slice(2);
    var lab = el("label", null, label);
    lab.setAttribute("for", id);
    var input = el("input");
    input.type = "text";
    input.id = id;
    input.required = true;
    form.appendChild(lab);
    form.appendChild(input);
    var save = el("button", "btn btn-small btn-primary", submitLabel);
    save.type = "submit";
    form.appendChild(save);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (input.value.trim()) onSave(input.value.trim());
    });
    return form;
  }

  function outcomeButtons(box, title) {
    var row = el("div", "lane-actions fix-actions");
    var extra = el("div", "fix-extra");
    function ask(label, submitLabel, field, status) {
      clear(extra);
      var form = noteForm(label, submitLabel, function (value) {
        var body = { status: status };
        body[field] = value;
        outcome(body);
      });
      extra.appendChild(form);
      form.querySelector("input").focus();
    }
    row.appendChild(button("Worked", "btn-ok", function () { outcome({ status: "applied_success" }); }, "Worked: " + title));
    row.appendChild(button("Partly", "btn-secondary", function () {
      ask("What is still not working?", "Save", "partial_notes", "applied_partial");
    }, "Partly worked: " + title));
    row.appendChild(button("Didn't work", "btn-danger-quiet", function () {
      ask("What happened?", "Save", "failure_reason", "applied_failure");
    }, "Didn't work: " + title));
    if (state.fix.status === "proposed") {
      row.appendChild(button("Dismiss", "btn-quiet", function () { outcome({ status: "dismissed" }); }, "Dismiss: " + title));
    }
    box.appendChild(row);
    box.appendChild(extra);
  }

  function renderFix() {
    var fix = state.fix;
    clear(els.fix);
    els.fix.hidden = !fix;
    if (!fix) return;
    var status = fix.status || "proposed";
    var box = el("section", "fix-banner fix-" + status);
    box.setAttribute("aria-label", "Suggested fix");
    box.setAttribute("data-fix-status", status);
    box.setAttribute("data-fix-id", fix.id);
    var head = el("div", "fix-head");
    head.appendChild(el("span", "step-kicker", "Suggested fix"));
    var pills = el("span", "pill-row");
    if (typeof fix.confidence_pct === "number") pills.appendChild(el("span", "pill pill-quiet", fix.confidence_pct + "% confident"));
    pills.appendChild(el("span", "pill fix-status fix-status-" + status, FIX_STATUS[status] || status));
    head.appendChild(pills);
    box.appendChild(head);
    box.appendChild(el("p", "fix-title", fix.title));
    if (fix.description && status !== "dismissed") box.appendChild(el("p", "fix-description", fix.description));
    if (fix.ai_drafted_script && status !== "dismissed") {
      var details = el("details", "more");
      details.appendChild(el("summary", null, "AI-drafted script"));
      var pre = el("pre", "code");
      pre.appendChild(el("code", null, fix.ai_drafted_script));
      details.appendChild(pre);
      box.appendChild(details);
    }
    if (status === "applied_partial" && fix.partial_notes) box.appendChild(el("p", "fix-note", "Still open: " + fix.partial_notes));
    if (status === "applied_failure" && fix.failure_reason) box.appendChild(el("p", "fix-note", "What happened: " + fix.failure_reason));
    if (status === "applied_pending" && fix.pending_reason) box.appendChild(el("p", "fix-note", "Waiting for: " + fix.pending_reason));
    var proposal = fix.ai_outcome_proposal;
    var open = status === "proposed" || status === "applied_pending";
    if (canWork && isOpen && open && proposal && proposal.resolution === "open") {
      var ask = el("div", "fix-proposal");
      ask.appendChild(el("p", "fix-proposal-text", PROPOSAL_TEXT[proposal.outcome] || "The AI proposed an outcome — confirm?"));
      if (proposal.reason) ask.appendChild(el("p", "muted small", proposal.reason));
      var row = el("div", "lane-actions");
      row.appendChild(button("Confirm", "btn-ok", function () { outcome({ ai_proposal: "accept" }); }));
      row.appendChild(button("Reject", "btn-danger-quiet", function () { outcome({ ai_proposal: "reject" }); }));
      ask.appendChild(row);
      box.appendChild(ask);
    } else if (canWork && isOpen && open) {
      outcomeButtons(box, fix.title);
    }
    els.fix.appendChild(box);
  }

  function loadFix() {
    return api("GET", "/sessions/" + sid + "/suggested-fixes").then(function (result) {
      if (result && "active" in result) { state.fix = result.active; renderFix(); }
    }, function () { /* not served (yet): the stream's parts keep the banner */ });
  }

  function refreshPanels() {
    loadLane();
    loadFacts();
    loadFix();
    loadBranches();
  }

  // --- fork and branches (GET/POST /chats/{id}/branches…) -----------------------------------------------

  var BRANCH_STATUS = {
    untried: "Untried", active: "In progress", dead_end: "Dead end", solved: "Solved", revived: "Reopened"
  };
  var OPEN_BRANCH = { untried: true, active: true, revived: true };
  var branchWork = false;  // a switch, mark or revive is on its way

  // Every node of the tree, depth first, with its depth (the tree is {id, parent_branch_id, ..., children}).
  function eachBranch(nodes, visit, depth) {
    (nodes || []).forEach(function (node) {
      visit(node, depth || 0);
      eachBranch(node.children, visit, (depth || 0) + 1);
    });
  }

  function findBranch(id) {
    var found = null;
    eachBranch(state.branches, function (node) { if (node.id === id) found = node; });
    return found;
  }

  function activeBranch() {
    var found = null;
    eachBranch(state.branches, function (node) { if (node.is_active) found = node; });
    return found;
  }

  function chatIsActive() { return !!(state.session && state.session.status === "active"); }

  function newBranch(id, parentId, label, status, forkPointId) {
    return { id: id, parent_branch_id: parentId, fork_point_id: forkPointId || null, label: label, description: "",
             status: status, is_active: false, findings: [], children: [] };
  }

  // The fork part names the new branches; the tree is read again from the server when the turn is over.
  function applyFork(fork) {
    if (!fork) return;
    var options = fork.branches || [];
    clear(els.fork);
    els.fork.hidden = false;
    els.fork.appendChild(el("strong", null, "Several explanations fit. "));
    if (fork.fork_reason) els.fork.appendChild(el("span", "fork-reason", fork.fork_reason + " "));
    var labels = options.map(function (b) { return b.label; });
    if (labels.length) els.fork.appendChild(el("span", null, "Branches: " + labels.join(", ") + ". "));
    var active = options.find(function (b) { return b.branch_id === fork.active_branch_id; });
    if (fork.switched && active) els.fork.appendChild(el("span", null, "Now working on: " + active.label + "."));
    // A fork on the main path keeps it active; one inside a branch forks that branch and moves to its first child.
    var parent = fork.switched ? activeBranch() : findBranch(fork.active_branch_id);
    if (!parent && !fork.switched && !state.branches.length) {
      parent = newBranch(fork.active_branch_id, null, "Main line", "active", null);
      state.branches.push(parent);
    }
    if (parent) {
      options.forEach(function (b) {
        if (findBranch(b.branch_id)) return;
        var status = fork.switched && b.branch_id === fork.active_branch_id ? "active" : "untried";
        parent.children.push(newBranch(b.branch_id, parent.id, b.label, status, fork.fork_point_id));
      });
      if (fork.switched && parent.status === "active") parent.status = "untried";
    }
    eachBranch(state.branches, function (node) { node.is_active = node.id === fork.active_branch_id; });
    renderBranches();
  }

  function renderBranches() {
    clear(els.branchList);
    els.branches.hidden = !state.branches.length;
    eachBranch(state.branches, function (node, depth) { els.branchList.appendChild(branchItem(node, depth)); });
    var current = activeBranch();
    els.branches.setAttribute("data-active-branch", current ? current.id : "");
    setBranchControls();
  }

  function branchItem(node, depth) {
    var main = !node.parent_branch_id;
    var label = main ? "Main path" : node.label;
    var li = el("li", "branch chat-branch branch-" + node.status + (node.is_active ? " is-active" : ""));
    li.setAttribute("data-branch-id", node.id);
    li.setAttribute("data-depth", String(Math.min(depth, 4)));
    var row = el("div", "branch-row");
    row.appendChild(el("span", "branch-label", label));
    if (!main) row.appendChild(el("span", "pill pill-branch-" + node.status, BRANCH_STATUS[node.status] || node.status));
    if (node.is_active) row.appendChild(el("span", "pill pill-current", "You are here"));
    li.appendChild(row);
    if (!main && node.description) li.appendChild(el("p", "branch-desc", node.description));
    if (node.findings && node.findings.length) {
      var details = el("details", "findings");
      details.appendChild(el("summary", null, "Findings (" + node.findings.length + ")"));
      var list = el("ul");
      node.findings.forEach(function (finding) { list.appendChild(el("li", null, finding)); });
      details.appendChild(list);
      li.appendChild(details);
    }
    if (canWork && isOpen) {
      var actions = branchActions(node, label, main);
      if (actions.firstChild) li.appendChild(actions);
    }
    return li;
  }

  function branchActions(node, label, main) {
    var box = el("div", "branch-actions");
    var open = !!OPEN_BRANCH[node.status];
    if (!node.is_active && open && chatIsActive()) {
      box.appendChild(button("Switch", "btn-secondary", function () { branchCall(node, "switch"); }, "Switch to " + label));
    }
    if (main) return box;  // the main path is never marked
    if (open) {
      box.appendChild(button("Dead end", "btn-quiet", function () {
        branchCall(node, "mark", { status: "dead_end" });
      }, "Mark " + label + " a dead end"));
      box.appendChild(button("Solved", "btn-quiet", function () {
        branchCall(node, "mark", { status: "solved" });
      }, "Mark " + label + " solved"));
    } else if (node.status === "dead_end" && chatIsActive()) {
      var details = el("details", "more revive");
      details.appendChild(el("summary", null, "Revive with new evidence"));
      var form = el("form", "stack chat-revive-form");
      var id = "evidence-" + node.id;
      var field = el("div", "field");
      var lab = el("label", null, "New evidence");
      lab.setAttribute("for", id);
      var area = el("textarea");
      area.id = id;
      area.rows = 2;
      area.required = true;
      area.maxLength = 20000;
      field.appendChild(lab);
      field.appendChild(area);
      form.appendChild(field);
      var row = el("div");
      var save = el("button", "btn btn-secondary btn-small", "Revive");
      save.type = "submit";
      save.setAttribute("aria-label", "Revive " + label);
      row.appendChild(save);
      form.appendChild(row);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var evidence = area.value.trim();
        if (evidence) branchCall(node, "revive", { evidence: evidence });
      });
      details.appendChild(form);
      box.appendChild(details);
    }
    return box;
  }

  // No branch change while a reply is written (the turn writes to the branch it started on) or another is sent.
  function setBranchControls() {
    var locked = turn.busy || branchWork;
    Array.prototype.forEach.call(els.branchList.querySelectorAll("button, textarea"), function (control) {
      control.disabled = locked;
    });
  }

  function branchCall(node, action, body) {
    if (turn.busy || branchWork) return;
    var before = activeBranch();
    branchWork = true;
    setBranchControls();
    clearError();
    api("POST", "/chats/" + sid + "/branches/" + node.id + "/" + action, body).then(function (tree) {
      branchWork = false;
      state.branches = Array.isArray(tree) ? tree : state.branches;
      renderBranches();
      var after = activeBranch();
      if ((before && before.id) !== (after && after.id)) {
        els.fork.hidden = true;  // the notice was about the branch the engineer has left
        return loadConversation();
      }
    }, function (error) {
      branchWork = false;
      setBranchControls();
      failed(error);
    });
  }

  // The active branch's conversation: its ancestors' messages up to the fork, then its own (GET /chats/{id}).
  function loadConversation() {
    var read = ++conversationReads;
    return api("GET", "/chats/" + sid).then(function (detail) {
      if (!detail) return;
      if (turn.busy || read !== conversationReads) { conversationStale = true; return; }
      if (detail.session) state.session = detail.session;
      clear(els.messages);
      (detail.messages || []).forEach(function (m) {
        if (m.role === "user" || m.content) {
          addMessage(m.role === "user" ? "user" : "assistant", m.id, m.content, m.images || 0);
        }
      });
    }, failed);
  }

  function loadBranches() {
    return api("GET", "/chats/" + sid + "/branches").then(function (tree) {
      if (!Array.isArray(tree) || JSON.stringify(tree) === JSON.stringify(state.branches)) return;
      state.branches = tree;
      renderBranches();
    }, function () { /* not served: the fork parts keep the list */ });
  }

  // --- approval cards (data-interrupt-request) ----------------------------------------------------------

  var pending = { cards: [], decisions: {} };

  function renderInterrupt(interrupt) {
    clear(els.approvals);
    pending = { cards: [], decisions: {} };
    if (!interrupt) return;
    var allowed = {};
    (interrupt.review_configs || []).forEach(function (c) { allowed[c.action_name] = c.allowed_decisions || []; });
    (interrupt.action_requests || []).forEach(function (request) {
      var card = approvalCard(request, allowed[request.name] || ["approve", "edit", "reject"]);
      pending.cards.push(request.approval_id);
      els.approvals.appendChild(card);
    });
    ((interrupt.context && interrupt.context.refused) || []).forEach(function (refused) {
      els.approvals.appendChild(el("p", "flash flash-error", "The copilot's call of " + refused.name + " was refused: " + refused.error));
    });
  }

  function approvalCard(request, allowed) {
    var card = el("article", "approval-card approval-pending chat-approval");
    card.setAttribute("data-approval-id", request.approval_id);
    var head = el("div", "approval-head");
    var h = el("h3", "approval-title");
    h.appendChild(el("code", null, request.name));
    head.appendChild(h);
    var pill = el("span", "pill pill-approval-pending", "Waiting for you");
    head.appendChild(pill);
    card.appendChild(head);
    card.appendChild(el("p", "approval-summary", request.summary || "The copilot wants to run " + request.name + "."));
    var args = el("div", "approval-args");
    args.appendChild(el("h4", "approval-args-title", "Arguments"));
    var pre = el("pre", "code");
    var argsText = JSON.stringify(request.args || {}, null, 2);
    pre.appendChild(el("code", null, argsText));
    args.appendChild(pre);
    card.appendChild(args);
    var message = el("p", "flash flash-error");
    message.setAttribute("role", "alert");
    message.hidden = true;
    card.appendChild(message);
    if (!canWork) { card.appendChild(el("p", "muted small", "Waiting for an engineer to decide.")); return card; }
    var actions = el("div", "approval-actions");
    var extra = el("div", "approval-extra");
    function decide(decision, more) {
      message.hidden = true;
      var entry = Object.assign({ request_id: request.approval_id, decision: decision }, more || {});
      pending.decisions[request.approval_id] = entry;
      pill.textContent = { approve: "Approved", approve_always: "Approved always", edit: "Approved with changes",
                           reject: "Rejected" }[decision];
      pill.className = "pill " + (decision === "reject" ? "pill-danger" : "pill-ok");
      actions.hidden = true;
      clear(extra);
      submitDecisions();
    }
    function say(text) { message.textContent = text; message.hidden = false; }
    if (allowed.indexOf("approve") >= 0) actions.appendChild(button("Approve", "btn-ok", function () { decide("approve"); }));
    if (allowed.indexOf("approve_always") >= 0) {
      actions.appendChild(button("Approve always in this chat", "btn-secondary", function () { decide("approve_always"); }));
    }
    if (allowed.indexOf("edit") >= 0) {
      actions.appendChild(button("Edit arguments", "btn-secondary", function () {
        clear(extra);
        var form = el("form", "stack approval-form");
        var id = "approval-edit-" + request.approval_id;
        var label = el("label", null, "Arguments (JSON)");
        label.setAttribute("for", id);
        var area = el("textarea", "mono");
        area.id = id;
        area.rows = 8;
        area.spellcheck = false;
        area.value = argsText;
        var field = el("div", "field");
        field.appendChild(label);
        field.appendChild(area);
        form.appendChild(field);
        var save = el("button", "btn btn-primary btn-small", "Approve with these arguments");
        save.type = "submit";
        form.appendChild(save);
        form.addEventListener("submit", function (event) {
          event.preventDefault();
          var edited;
          try { edited = JSON.parse(area.value); } catch (e) { say("The arguments are not valid JSON: " + e.message); return; }
          if (!edited || typeof edited !== "object" || Array.isArray(edited)) { say("The arguments must be a JSON object."); return; }
          decide("edit", { edited_arguments: edited });
        });
        extra.appendChild(form);
        area.focus();
      }));
    }
    if (allowed.indexOf("reject") >= 0) {
      actions.appendChild(button("Reject", "btn-danger-quiet", function () {
        clear(extra);
        var form = el("form", "stack approval-form");
        var id = "approval-reason-" + request.approval_id;
        var label = el("label", null, "Reason (optional)");
        label.setAttribute("for", id);
        var input = el("input");
        input.type = "text";
        input.id = id;
        input.maxLength = 1000;
        var field = el("div", "field");
        field.appendChild(label);
        field.appendChild(input);
        form.appendChild(field);
        var save = el("button", "btn btn-danger btn-small", "Reject this call");
        save.type = "submit";
        form.appendChild(save);
        form.addEventListener("submit", function (event) {
          event.preventDefault();
          var reason = input.value.trim();
          decide("reject", reason ? { reason: reason } : {});
        });
        extra.appendChild(form);
        input.focus();
      }));
    }
    card.appendChild(actions);
    card.appendChild(extra);
    card._reopen = function (text) {
      actions.hidden = false;
      pill.textContent = "Waiting for you";
      pill.className = "pill pill-approval-pending";
      say(text);
    };
    return card;
  }

  function submitDecisions() {
    var decided = pending.cards.filter(function (id) { return pending.decisions[id]; });
    if (decided.length < pending.cards.length) return;
    var decisions = pending.cards.map(function (id) { return pending.decisions[id]; });
    stream("/sessions/" + sid + "/resume", { decisions: decisions }, function (error) {
      // Refused before anything ran (invalid edit, already decided): the cards take a new decision.
      pending.decisions = {};
      Array.prototype.forEach.call(els.approvals.querySelectorAll(".chat-approval"), function (card) {
        if (card._reopen) card._reopen(error && error.message ? error.message : "Not sent; decide again.");
      });
    });
  }

  // --- first paint ----------------------------------------------------------------------------------

  renderLane();
  renderFacts();
  renderFix();
  renderBranches();
  renderFlows(state.flows || []);
  showModel(state.usage);
  if (state.interrupt) renderInterrupt(state.interrupt);
  setBusy(false);
  root.setAttribute("data-ready", "true");
  var last = state.last_turn;
  if (last && last.status === "running") {
    // A reload mid-reply: read the turn again from its first event, so the whole reply shows.
    turn.turnId = last.id;
    follow(last.id, 0);
  } else if (els.input && !els.input.disabled && !document.querySelector(".flash-ok")) {
    els.input.focus();
  }
})();
