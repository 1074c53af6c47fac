// The chat page: sends a prompt to /chat/stream with fetch and reads the reply as server-sent
// events from a ReadableStream. While the reply streams, its new text comes as `delta` events,
// shown as plain text (a text node: never interpreted as HTML); the reply rendered and sanitised
// on the server comes once, in `done`, and replaces it. Model text is never interpreted here. Without this script the composer
// still works as a plain form (the whole reply, then the page).
"use strict";

(function () {
  var form = document.getElementById("composer");
  var messages = document.getElementById("messages");
  var turns = document.getElementById("turns");
  var template = document.getElementById("turn-template");
  var prompt = document.getElementById("prompt");
  var sendButton = document.getElementById("send");
  var errorBox = document.getElementById("composer-error");
  var conversationInput = document.getElementById("conversation-id");
  var list = document.getElementById("conversation-list");
  var noConversations = document.getElementById("no-conversations");
  var title = document.getElementById("chat-title");
  var info = document.getElementById("chat-info");
  var removal = document.getElementById("remove-conversation");
  var removeForm = document.getElementById("remove-form");
  var search = document.getElementById("conversation-search");
  var toggle = document.getElementById("sidebar-toggle");
  var scrim = document.getElementById("scrim");
  var attachInput = document.getElementById("attach");
  var chips = document.getElementById("attachments");
  var STICK_PX = 80;
  var busy = false;
  var attached = [];  // File objects for the next message, shown as chips

  // ---------------------------------------------------------------- conversation list

  function setDrawer(open) {
    document.body.classList.toggle("nav-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (scrim) scrim.hidden = !open;
  }
  if (toggle) toggle.addEventListener("click", function () {
    setDrawer(!document.body.classList.contains("nav-open"));
  });
  if (scrim) scrim.addEventListener("click", function () { setDrawer(false); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") setDrawer(false);
  });

  function filterList() {
    var needle = search.value.trim().toLocaleLowerCase();
    var shown = 0;
    list.querySelectorAll("li").forEach(function (item) {
      var text = item.querySelector(".c-title").textContent.toLocaleLowerCase();
      var match = !needle || text.indexOf(needle) !== -1;
      item.hidden = !match;
      if (match) shown += 1;
    });
    noConversations.hidden = shown > 0;
    if (!shown) noConversations.textContent = needle ? "No title matches." : "No conversations yet.";
  }
  if (search && list) search.addEventListener("input", filterList);

  function listItem(conversationId) {
    return list.querySelector('a[data-id="' + CSS.escape(conversationId) + '"]');
  }

  function addToList(conversationId) {
    var link = listItem(conversationId);
    if (!link) {
      var item = document.createElement("li");
      link = document.createElement("a");
      link.href = "/chat/" + encodeURIComponent(conversationId);
      link.dataset.id = conversationId;
      link.dataset.turns = "0";
      var name = document.createElement("span");
      name.className = "c-title";
      name.textContent = "New conversation";
      var meta = document.createElement("span");
      meta.className = "c-meta";
      meta.textContent = "just now";
      link.append(name, meta);
      item.append(link);
    }
    list.querySelectorAll('a[aria-current="page"]').forEach(function (a) { a.removeAttribute("aria-current"); });
    link.setAttribute("aria-current", "page");
    list.prepend(link.parentElement);
    noConversations.hidden = true;
    return link;
  }

  // The list item of a conversation after a turn: its new time and number of turns, as the
  // server writes them, so the list is current without a reload.
  function countTurn(link, when) {
    var count = Number(link.dataset.turns || 0) + 1;
    link.dataset.turns = String(count);
    var meta = link.querySelector(".c-meta");
    var time = document.createElement("time");
    time.setAttribute("datetime", when);
    meta.replaceChildren(time, " · " + count + " turn" + (count === 1 ? "" : "s"));
    window.Gateway.localTimes(meta);
  }

  function setTitle(text, link) {
    if (!text) return;
    title.textContent = text;
    document.title = text + " · LLM Gateway";
    if (link) link.querySelector(".c-title").textContent = text;
  }

  // The header of the conversation a reply opened: its account and model, and Remove.
  function showConversation(data) {
    if (info) {
      info.textContent = (data.account || "own key") + " · " + data.model;
      info.hidden = false;
    }
    if (removal && removeForm) {
      removeForm.action = "/chat/" + encodeURIComponent(data.conversation_id) + "/remove";
      removal.hidden = false;
    }
  }

  // ---------------------------------------------------------------- turns

  function nearBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < STICK_PX;
  }
  function toBottom() { messages.scrollTop = messages.scrollHeight; }

  // Follow the reply as it grows only while the reader is at the end: someone who scrolled up
  // to read stays where they are.
  function keepingPlace(change) {
    var stick = nearBottom();
    change();
    if (stick) toBottom();
  }

  function showAs(turn, view) {
    turn.dataset.view = view;
    turn.querySelector(".json").hidden = view !== "json";
    turn.querySelectorAll(".seg").forEach(function (seg) {
      seg.setAttribute("aria-pressed", seg.dataset.show === view ? "true" : "false");
    });
  }
  turns.addEventListener("click", function (event) {
    var seg = event.target.closest(".seg");
    if (seg) showAs(seg.closest(".turn"), seg.dataset.show);
    var turn = event.target.closest(".turn");
    if (event.target.closest(".act-stop")) stopReply(turn);
    else if (event.target.closest(".act-regenerate")) regenerate(turn);
    else if (event.target.closest(".act-continue")) goOn();
  });

  // A copy button on every code block of a finished reply.
  function decorate(root) {
    root.querySelectorAll(".md pre").forEach(function (pre) {
      if (pre.querySelector(".copy-code")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-code";
      button.textContent = "Copy";
      button.addEventListener("click", function () {
        var code = pre.querySelector("code");
        window.Gateway.copyText((code || pre).textContent, button, null);
      });
      pre.append(button);
    });
  }

  // The reply as it streams, before the rendered one replaces it: its text in paragraphs (at
  // blank lines, as Markdown makes them, so the reply keeps its height when it is rendered),
  // each a text node that deltas are appended to. Each delta is handled once: the work, like
  // the bytes sent, grows with the reply, not with its square.
  function streamInto(body) {
    var current = null;
    var held = "";  // trailing newlines: the start of a blank line, or of a line break
    function paragraph() {
      var p = document.createElement("p");
      p.className = "streaming-text";
      current = document.createTextNode("");
      p.append(current);
      body.append(p);
    }
    body.replaceChildren();
    paragraph();
    return function (text) {
      var parts = (held + text).split(/\n{2,}/);
      var last = parts[parts.length - 1];
      var kept = last.replace(/\n+$/, "");
      held = last.slice(kept.length);
      parts[parts.length - 1] = kept;
      parts.forEach(function (part, index) {
        if (index > 0) paragraph();
        if (part) current.appendData(part);
      });
    };
  }

  function newTurn(text, images) {
    var empty = document.getElementById("empty-chat");
    if (empty) empty.remove();
    var turn = template.content.firstElementChild.cloneNode(true);
    turn.querySelector(".bubble").textContent = text;
    var bubble = turn.querySelector(".prompt");
    (images || []).forEach(function (file) {
      var shown = document.createElement("span");
      shown.className = "attachment";
      shown.append(thumbnail(file, ""));
      bubble.append(shown);
    });
    turn.classList.add("streaming");
    turns.append(turn);
    toBottom();
    return turn;
  }

  function finish(turn, data) {
    var reply = data.json;
    turn.id = "turn-" + reply.message.id;
    turn.dataset.messageId = reply.message.id;
    turn.classList.remove("streaming");
    turn.classList.add("done");
    turn.querySelector(".reply-body").innerHTML = data.html;
    turn.querySelector(".json-text").textContent = JSON.stringify(reply, null, 2);
    var meta = turn.querySelector(".meta");
    var parts = reply.stopped ? ["stopped", reply.model] : [reply.model];
    if (reply.usage && reply.usage.total_tokens !== null && reply.usage.total_tokens !== undefined) {
      parts.push(reply.usage.total_tokens + " tokens");
    }
    parts.push(Number(reply.api_response_time_taken).toFixed(1) + " s");
    meta.textContent = parts.join(" · ") + " · ";
    var when = document.createElement("time");
    when.setAttribute("datetime", reply.message.create_time);
    meta.append(when);
    window.Gateway.localTimes(meta);
    decorate(turn);
  }

  // ---------------------------------------------------------------- errors

  function showError(message, signedOut) {
    errorBox.textContent = message + " ";
    if (signedOut) {
      var link = document.createElement("a");
      link.href = "/login?next=" + encodeURIComponent(location.pathname);
      link.target = "_blank";
      link.textContent = "Sign in again";
      errorBox.append(link);
    }
    errorBox.hidden = false;
  }

  // Nothing of a failed turn is stored: take it off the page and give the text back.
  function fail(turn, problem, text, handlers) {
    if (handlers) handlers.undo();
    turn.remove();
    if (!prompt.value) prompt.value = text;
    autosize();
    showError(problem.message || "The reply failed.", problem.code === "signed_out");
  }

  async function readError(response) {
    try {
      var body = await response.json();
      if (body && body.message) return body;
    } catch (ignored) { /* not JSON */ }
    return { message: "The server answered " + response.status + ". Try again in a moment." };
  }

  // ---------------------------------------------------------------- the stream

  async function readEvents(body, handlers) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var ended = false;
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      for (var i = 0; i < blocks.length; i += 1) {
        var event = "message";
        var data = "";
        blocks[i].split("\n").forEach(function (line) {
          if (line.indexOf("event: ") === 0) event = line.slice(7);
          else if (line.indexOf("data: ") === 0) data += line.slice(6);
        });
        if (event === "done" || event === "error") ended = true;
        if (handlers[event]) handlers[event](JSON.parse(data));
      }
    }
    if (!ended) throw new Error("the stream ended early");
  }

  function handlersFor(turn, again) {
    var body = turn.querySelector(".reply-body");
    var link = null;
    var failed = null;
    var deltaEvents = 0;
    var streamed = null;  // appends a delta to the reply as it streams (streamInto)
    var created = false;
    var before = { url: location.href, title: title.textContent, doc: document.title };
    var tiers = form.querySelectorAll("label.tier, span.tier:not(#follow-note)");
    var note = document.getElementById("follow-note");
    function lockTier(locked, account) {
      tiers.forEach(function (tier) {
        tier.hidden = locked;
        tier.querySelectorAll("select, input").forEach(function (el) { el.disabled = locked; });
      });
      if (note) {
        note.textContent = locked ? "Follow-ups stay on " + (account || "your own key") + "." : "";
        note.hidden = !locked;
      }
    }
    return {
      start: function (data) {
        turn.dataset.messageId = data.message_id;
        if (data.refused && data.refused.length) showError(data.refused.join(" "));
        // Only the images the model got stay shown with the prompt.
        (data.refused_files || []).forEach(function (name) {
          turn.querySelectorAll(".prompt .attachment img").forEach(function (image) {
            if (image.alt === name) image.parentNode.remove();
          });
        });
        conversationInput.value = data.conversation_id;
        created = data.is_new_conversation;
        if (created) {
          history.replaceState(null, "", "/chat/" + encodeURIComponent(data.conversation_id));
          lockTier(true, data.account);
        }
        link = addToList(data.conversation_id);
        showConversation(data);
      },
      delta: function (data) {
        deltaEvents += 1;
        turn.dataset.deltaEvents = String(deltaEvents);
        if (!streamed) streamed = streamInto(body);
        keepingPlace(function () { streamed(data.text); });
      },
      title: function (data) { setTitle(data.title, link); },
      done: function (data) {
        keepingPlace(function () { finish(turn, data); });
        // The title may have come only now (a late title gives way to one cut from the prompt).
        setTitle(data.title, link);
        if (link && !again) countTurn(link, data.json.message.create_time);
      },
      error: function (data) { failed = data; },
      get failed() { return failed; },
      // A new conversation that failed was never stored: forget it here too.
      undo: function () {
        if (!created) return;
        if (link) link.parentElement.remove();
        conversationInput.value = "";
        history.replaceState(null, "", before.url);
        title.textContent = before.title;
        document.title = before.doc;
        if (info) info.hidden = true;
        if (removal) removal.hidden = true;
        lockTier(false);
      },
    };
  }

  function autosize() {
    prompt.style.height = "auto";
    prompt.style.height = Math.min(prompt.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  // ---------------------------------------------------------------- attachments

  function showChips() {
    chips.replaceChildren();
    attached.forEach(function (file, index) {
      var chip = document.createElement("li");
      chip.className = "chip";
      if (isImage(file)) chip.append(thumbnail(file, "chip-thumb"));
      var name = document.createElement("span");
      name.className = "chip-name";
      name.textContent = file.name;
      name.title = file.name + " · " + file.size + " bytes";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        attached.splice(index, 1);
        showChips();
      });
      chip.append(name, remove);
      chips.append(chip);
    });
    chips.hidden = attached.length === 0;
  }

  function isImage(file) {
    return /^image\/(png|jpeg|gif|webp)$/.test(file.type);
  }

  // A picture of a file the browser holds (an object URL: nothing is uploaded to show it),
  // one per file however often the chips are drawn again.
  var previews = new WeakMap();
  function thumbnail(file, className) {
    if (!previews.has(file)) previews.set(file, URL.createObjectURL(file));
    var image = document.createElement("img");
    image.className = className;
    image.alt = file.name;
    image.src = previews.get(file);
    return image;
  }

  function attach(files) {
    Array.prototype.forEach.call(files, function (file) { attached.push(file); });
    showChips();
  }

  if (attachInput && chips) {
    attachInput.addEventListener("change", function () {
      attach(attachInput.files);
      attachInput.value = "";  // the chips hold them now
    });
    form.addEventListener("dragover", function (event) {
      if (event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") !== -1) {
        event.preventDefault();
        form.classList.add("dropping");
      }
    });
    form.addEventListener("dragleave", function () { form.classList.remove("dropping"); });
    form.addEventListener("drop", function (event) {
      form.classList.remove("dropping");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        event.preventDefault();
        attach(event.dataTransfer.files);
      }
    });
    prompt.addEventListener("paste", function (event) {
      var files = event.clipboardData && event.clipboardData.files;
      if (files && files.length) {
        event.preventDefault();
        attach(files);
      }
    });
  }

  async function send(event) {
    event.preventDefault();
    if (busy) return;
    var text = prompt.value;
    if (!text.trim() && !attached.length) { prompt.focus(); return; }
    var fields = new FormData(form);
    fields.delete("file");
    attached.forEach(function (file) { fields.append("file", file, file.name); });
    var sent = attached;
    var shown = text + sent.filter(function (file) { return !isImage(file); })
      .map(function (file) { return "\nAttached: " + file.name; }).join("");
    if (!sent.length) fields = new URLSearchParams(fields);
    attached = [];
    if (chips) showChips();
    var turn = newTurn(shown, sent.filter(isImage));
    prompt.value = "";
    autosize();
    await run(turn, fields, {
      failed: function (problem, handlers) {
        fail(turn, problem, text, handlers);
        if (!attached.length && sent.length) attach(sent);  // nothing is lost: send again
      },
    });
  }

  // One turn streamed into ``turn``: a new prompt, a regenerated answer or a continuation.
  async function run(turn, fields, how) {
    busy = true;
    sendButton.disabled = true;
    errorBox.hidden = true;
    var handlers = null;
    try {
      var response = await fetch(form.dataset.stream, {
        method: "POST",
        body: fields,
        credentials: "same-origin",
        headers: { "X-CSRF-Token": fields.get("csrf_token"), "Accept": "text/event-stream" },
      });
      var type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        how.failed(await readError(response), null);
        return;
      }
      handlers = handlersFor(turn, how.again);
      await readEvents(response.body, handlers);
      if (handlers.failed) how.failed(handlers.failed, handlers);
    } catch (err) {
      how.failed({ message: "The connection was lost before the reply ended. Nothing was saved." }, handlers);
    } finally {
      busy = false;
      sendButton.disabled = false;
      prompt.focus();
    }
  }

  function turnFields(extra) {
    var fields = new URLSearchParams();
    fields.set("csrf_token", form.querySelector('input[name="csrf_token"]').value);
    fields.set("conversation_id", conversationInput.value);
    Object.keys(extra).forEach(function (name) { fields.set(name, extra[name]); });
    return fields;
  }

  // Stop: the server stops the upstream call; the stream then ends with what arrived.
  async function stopReply(turn) {
    var id = turn && turn.dataset.messageId;
    if (!id) return;
    var fields = turnFields({ message_id: id });
    fields.delete("conversation_id");
    var response = await fetch(form.dataset.stop, {
      method: "POST", body: fields, credentials: "same-origin",
      headers: { "X-CSRF-Token": fields.get("csrf_token") },
    });
    if (!response.ok && response.status !== 404) showError((await readError(response)).message);
  }

  // Regenerate: a new answer to the last prompt streams in the old one's place; the old one
  // comes back if the new one fails.
  async function regenerate(turn) {
    if (busy || !turn || !turn.dataset.messageId) return;
    var body = turn.querySelector(".reply-body");
    var meta = turn.querySelector(".meta");
    // The old answer's nodes themselves, kept aside (with their copy buttons' listeners).
    var old = { body: Array.from(body.childNodes), meta: Array.from(meta.childNodes),
                json: turn.querySelector(".json-text").textContent, id: turn.id };
    turn.classList.remove("done");
    turn.classList.add("streaming");
    var typing = document.createElement("span");
    typing.className = "typing";
    typing.setAttribute("aria-label", "Writing");
    typing.append(document.createElement("i"), document.createElement("i"), document.createElement("i"));
    body.replaceChildren(typing);
    await run(turn, turnFields({ regenerate: turn.dataset.messageId }), {
      again: true,
      failed: function (problem) {
        body.replaceChildren.apply(body, old.body);
        meta.replaceChildren.apply(meta, old.meta);
        turn.querySelector(".json-text").textContent = old.json;
        turn.dataset.messageId = old.id.replace(/^turn-/, "");
        turn.classList.remove("streaming");
        turn.classList.add("done");
        showError(problem.message || "The new answer failed; the earlier one stays.");
      },
    });
  }

  // Continue: a follow-up asking the model to go on.
  async function goOn() {
    if (busy || !conversationInput.value) return;
    var turn = newTurn(form.dataset.continuePrompt);
    await run(turn, turnFields({ "continue": "1" }), {
      failed: function (problem, handlers) {
        turn.remove();
        showError(problem.message || "The reply failed.", problem.code === "signed_out");
      },
    });
  }

  if (form) {
    form.addEventListener("submit", send);
    prompt.addEventListener("input", autosize);
    prompt.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    autosize();
    prompt.focus();
    prompt.setSelectionRange(prompt.value.length, prompt.value.length);
  }
  decorate(turns);
  toBottom();
  document.documentElement.dataset.chatReady = "1";  // for tests: the composer is wired
})();
