/* refreshq's pages: live refresh progress (Server-Sent Events, else polling with ETags) and the pages'
   actions (fetch to /api/v1 from this origin, with the session cookie). Vendored, no build step.
   Data is only ever set with textContent, never as markup. */
(function () {
  "use strict";

  var POLL_MS = 2000;

  function $(selector, root) { return (root || document).querySelector(selector); }

  function say(text, isError) {
    var box = $("#message");
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = false;
  }

  function problemText(response) {
    return response.text().then(function (body) {
      try { var p = JSON.parse(body); return p.title + ": " + p.detail; } catch (e) { return response.status + " " + body; }
    });
  }

  function send(method, url, body) {
    var options = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      if (response.ok) return response.status === 204 ? null : response.json();
      return problemText(response).then(function (text) { throw new Error(text); });
    });
  }

  /* Polls `url` every POLL_MS with If-None-Match: an unchanged resource answers 304 and costs nothing. */
  function poller(url, onData, shouldStop) {
    var etag = null, timer = null;
    function tick() {
      var headers = {"Accept": "application/json"};
      if (etag) headers["If-None-Match"] = etag;
      fetch(url, {credentials: "same-origin", headers: headers, cache: "no-store"}).then(function (response) {
        if (response.status === 200) {
          etag = response.headers.get("ETag");
          return response.json().then(function (data) { onData(data); });
        }
      }).catch(function () { /* offline for a moment: try again at the next tick */ }).then(function () {
        if (!shouldStop()) timer = setTimeout(tick, POLL_MS);
      });
    }
    tick();
    return function () { clearTimeout(timer); };
  }

  function setBar(fill, percent) {
    fill.style.width = Math.max(0, Math.min(100, percent)) + "%";
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function bar(percent) {
    var outer = document.createElement("div"), fill = document.createElement("div");
    outer.className = "bar";
    fill.className = "fill";
    setBar(fill, percent);
    outer.appendChild(fill);
    return outer;
  }

  /* The upstream a task is for, as the server's pages name it (jobs.upstream.identity.label). */
  function upstreamLabel(u) {
    if (!u) return "";
    if (u.kind === "http") return u.url;
    if (u.kind === "llm") return "LLM " + u.model + " at " + u.base_url;
    if (u.kind === "sample") return "the built-in sample" + (u.scale === null || u.scale === undefined ? "" : " (scale " + u.scale + ")");
    return "an unknown upstream";
  }

  /* ---- / : the task list, its bars kept live by polling the list API ---- */
  function taskRow(t) {
    var row = document.createElement("tr");
    row.setAttribute("data-task", t.task_id);
    var name = cell(row, "");
    var link = document.createElement("a");
    link.href = "/refreshes/" + encodeURIComponent(t.task_id);
    link.textContent = t.hospital_name;
    var id = document.createElement("small");
    id.textContent = t.task_id;
    name.appendChild(link);
    name.appendChild(document.createElement("br"));
    name.appendChild(id);
    var status = cell(row, t.status, "status");
    if (t.stalled) {
      var flag = document.createElement("span");
      flag.className = "stalled";
      flag.textContent = " stalled";
      status.appendChild(flag);
    }
    var progress = cell(row, "");
    progress.appendChild(bar(t.progress));
    var pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = t.progress + " %";
    progress.appendChild(pct);
    cell(row, t.owner);
    cell(row, upstreamLabel(t.upstream), "upstream");
    cell(row, t.created_at || "");
    cell(row, t.started_at || "");
    cell(row, t.eta_seconds === null ? "" : t.eta_seconds + " s");
    return row;
  }

  function indexPage() {
    var body = $("#tasks tbody"), url = document.body.getAttribute("data-list-url");
    poller(url, function (page) {
      var rows = document.createDocumentFragment();
      page.items.forEach(function (t) { rows.appendChild(taskRow(t)); });
      body.replaceChildren(rows);
    }, function () { return false; });
    var form = $("#new-refresh");
    if (!form) return;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var kind = form.querySelector("input[name=kind]:checked").value;
      var request = {kind: kind};
      if (kind === "province") request.province = $("#province").value;
      send("POST", form.getAttribute("action"), request).then(function (task) {
        say("started " + task.hospital_name + ": " + task.task_id);
        body.insertBefore(taskRow(task), body.firstChild);
      }).catch(function (error) { say(error.message, true); });
    });
  }

  /* ---- /refreshes/<id> : Server-Sent Events, else polling ---- */
  /* The upstream's pacing in a few words: as jobs.pacing.pacing_text says it. */
  function pacingText(p) {
    if (!p) return "";
    var text;
    if (p.mode === "fixed") text = p.rate + "/s (REFRESHQ_UPSTREAM_RPS)";
    else if (p.rate === null) text = "learning: nothing throttled yet, not limited";
    else text = p.rate + "/s learned (throttled at " + p.learned_from + "/s)";
    if (p.paused_until) text += "; paused until " + p.paused_until + " (Retry-After)";
    return text;
  }

  function drawTask(state) {
    var t = state.task;
    setBar($("#task-fill"), t.progress);
    $("#task-progress").textContent = t.progress + " %";
    $("#task-status").textContent = t.status;
    $("#task-stalled").hidden = !t.stalled;
    $("#task-step").textContent = t.current_step || "";
    $("#task-rate").textContent = t.records_per_second === null ? "" : String(t.records_per_second);
    $("#task-eta").textContent = t.eta_seconds === null ? "" : t.eta_seconds + " s";
    $("#task-hospitals").textContent = String(t.statistics.hospitals_found);
    $("#task-pacing").textContent = pacingText(t.upstream_pacing);
    $("#task-started").textContent = t.started_at || "";
    $("#task-retry").textContent = t.retry ? JSON.stringify(t.retry) : "";
    $("#task-error").textContent = t.error_message || "";
    var active = t.status === "PENDING" || t.status === "RUNNING";
    var cancel = $("#cancel"), resume = $("#resume");
    if (cancel) cancel.hidden = !active;
    if (resume) resume.hidden = !(t.status === "FAILED" || t.status === "CANCELLED");
    var regions = document.createDocumentFragment();
    t.failed_regions.forEach(function (r) {
      var li = document.createElement("li");
      li.textContent = r.code + " " + r.name + ": " + r.error;
      regions.appendChild(li);
    });
    $("#failed-regions").replaceChildren(regions);
    drawMismatches(t.total_mismatches);
    var rows = document.createDocumentFragment();
    state.provinces.forEach(function (p) {
      var row = document.createElement("tr");
      row.setAttribute("data-code", p.code);
      cell(row, p.name);
      cell(row, "").appendChild(bar(p.leaves_total ? 100 * p.leaves_done / p.leaves_total : 0));
      cell(row, p.leaves_done + " / " + p.leaves_total, "leaves");
      cell(row, String(p.hospitals), "hospitals");
      cell(row, p.outcome || "", "outcome");
      rows.appendChild(row);
    });
    $("#provinces tbody").replaceChildren(rows);
  }

  function drawMismatches(mismatches) {
    var summary = $("#total-mismatches");
    if (!summary || !mismatches) return;
    summary.setAttribute("data-count", String(mismatches.count));
    summary.textContent = mismatches.count ? mismatches.count + " leaf/leaves listed the same twice against " +
      "the total the upstream stated: taken, the count is stale." : "none";
    var examples = document.createDocumentFragment();
    mismatches.examples.forEach(function (e) {
      var li = document.createElement("li");
      li.textContent = e.leaf + ": total " + e.total + ", listed " + e.listed;
      examples.appendChild(li);
    });
    $("#total-mismatch-examples").replaceChildren(examples);
  }

  function ended(state) {
    var s = state.task.status;
    return s === "SUCCEEDED" || s === "FAILED" || s === "CANCELLED";
  }

  function refreshPage() {
    var mode = $("#live-mode"), last = null, stopPolling = null;
    function draw(state) { last = state; drawTask(state); }
    function poll() {
      if (stopPolling) return;
      mode.textContent = "live (polling)";
      stopPolling = poller(document.body.getAttribute("data-live-url"), draw,
                           function () { return last !== null && ended(last); });
    }
    if (!window.EventSource) { poll(); return; }
    var source = new EventSource(document.body.getAttribute("data-events-url"));
    mode.textContent = "live (stream)";
    source.addEventListener("state", function (event) { draw(JSON.parse(event.data)); });
    source.addEventListener("end", function (event) {
      draw(JSON.parse(event.data));
      source.close();
      mode.textContent = "ended";
    });
    source.addEventListener("gone", function () { source.close(); mode.textContent = "task deleted"; });
    /* A dropped stream or one refused at the cap (503): keep the page live by polling instead. */
    source.addEventListener("error", function () { source.close(); poll(); });
  }

  /* ---- actions: [data-action] buttons ---- */
  function argsOf(button) {
    var input = button.parentNode.querySelector("input.args");
    if (!input || !input.value.trim()) return {};
    return {args: JSON.parse(input.value)};
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button) return;
    var action = button.getAttribute("data-action"), url = button.getAttribute("data-url");
    if (action === "logout") {
      fetch(url, {method: "POST", credentials: "same-origin"}).then(function () { location.href = "/login"; });
      return;
    }
    var body;
    try { body = action === "run" ? argsOf(button) : undefined; } catch (e) { say("arguments: " + e.message, true); return; }
    button.disabled = true;
    send("POST", url, body).then(function (result) {
      if (action === "run") say("run " + result.id + " queued");
      else say("done");
      if (button.getAttribute("data-reload")) location.reload();
    }).catch(function (error) { say(error.message, true); }).then(function () { button.disabled = false; });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "index") indexPage();
    if (page === "refresh") refreshPage();
  });
})();
