// The field-encrypt console: polls the JSON endpoints and redraws each panel in place.
// No framework, no inline script (the CSP forbids it), and text only ever goes in through
// textContent, never through HTML parsing.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const RUNS_MS = 1000; // the ledger: a few rows, read every second while the page is open
  const VERSIONS_MS = 2000; // DEKs per version: one count per version, as keys list does
  const SLOW_MS = 5000; // the gate and the rotation state
  const AUDIT_MS = 10000; // verifying the chain reads the whole trail, as audit verify does

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(
      ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: columns, class: "empty" }, emptyText))])
    );
  }

  function badge(state) {
    return h("span", { class: "badge badge-" + state.replace(/[^a-z]+/g, "-") }, state);
  }

  function num(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const sec = Math.round(seconds);
    if (sec < 60) return sec + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min " + (sec % 60) + " s";
    if (sec < 86400) return (sec / 3600).toFixed(1) + " h";
    return (sec / 86400).toFixed(1) + " days";
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace("+00:00", " UTC") : "–";
  }

  function showError(section, message) {
    const p = document.querySelector("#" + section + " > p.error");
    if (!p) return;
    p.hidden = !message;
    p.textContent = message || "";
  }

  async function load(path) {
    const response = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
    const body = await response.json().catch(() => ({ error: "HTTP " + response.status }));
    if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
    return body;
  }

  // -- key versions --------------------------------------------------------------------

  function drawChart(versions) {
    const box = document.getElementById("versions-chart");
    const max = Math.max(1, ...versions.map((v) => v.deks));
    const rowH = 28, labelW = 110, barW = 300, countW = 90;
    const height = Math.max(1, versions.length) * rowH + 8;
    const width = labelW + barW + countW;
    const label = versions.map((v) => "version " + v.version + ": " + v.deks + " DEKs").join(", ");
    const svg = s("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height,
      role: "img", "aria-label": "DEKs per MEK version: " + (label || "no versions"),
    });
    svg.append(s("title", {}, "DEKs per MEK version"));
    versions.forEach((v, i) => {
      const y = 4 + i * rowH;
      const w = v.deks ? Math.max(2, Math.round((v.deks / max) * barW)) : 0;
      const g = s("g", { class: "bar bar-" + v.status, "data-version": v.version });
      g.append(
        s("text", { x: labelW - 8, y: y + 18, "text-anchor": "end", class: "bar-label" }, "version " + v.version),
        s("rect", { x: labelW, y: y + 3, width: barW, height: rowH - 8, class: "bar-track" }),
        s("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, class: "bar-fill" }),
        s("text", { x: labelW + barW + 8, y: y + 18, class: "bar-count" }, num(v.deks))
      );
      svg.append(g);
    });
    box.replaceChildren(svg);
  }

  function renderVersions(data) {
    document.getElementById("product").textContent = data.product;
    document.title = "field-encrypt console: " + data.product;
    document.getElementById("versions-summary").textContent =
      "MEK " + data.mek_name + ": current version " + (data.current_version || "none") + ", " +
      num(data.total_deks) + " DEKs in all.";
    const rows = data.versions.map((v) =>
      h("tr", { "data-version": v.version },
        h("th", { scope: "row" }, v.version),
        h("td", {}, badge(v.status)),
        h("td", {}, when(v.created_at)),
        h("td", { class: "num" }, num(v.deks)),
        h("td", {}, v.notes || "")
      )
    );
    fill(document.querySelector("#versions-table tbody"), rows, "No MEK version yet.", 5);
    drawChart(data.versions);
    const tier = document.getElementById("kek-tier");
    tier.hidden = !data.kek_tier;
    if (data.kek_tier) {
      const keks = data.kek_tier.keks.map((k) =>
        h("tr", {},
          h("th", { scope: "row" }, k.kek_id.slice(0, 8)),
          h("td", {}, k.partition || "–"),
          h("td", {}, k.mek_version),
          h("td", {}, k.active ? "yes" : "no"),
          h("td", { class: "num" }, num(k.deks))
        )
      );
      document.querySelector("#kek-table caption").textContent =
        "KEK tier (" + data.kek_tier.layout + " layout)";
      fill(document.querySelector("#kek-table tbody"), keks, "No KEK yet.", 5);
    }
  }

  // -- runs ------------------------------------------------------------------------------

  function renderRuns(data) {
    const live = data.runs.filter((r) => r.state === "in flight").length;
    document.getElementById("runs-summary").textContent = live
      ? live + " run(s) in flight."
      : data.runs.length ? "No run in flight." : "No run recorded yet.";
    const rows = data.runs.map((r) => {
      const bar = h("progress", {
        max: Math.max(r.total, 1), value: r.processed,
        "aria-label": "run " + r.run_id + " progress",
      });
      const shards = h("ul", { class: "shards" },
        ...r.shards.map((sh) =>
          h("li", {}, "shard " + sh.shard + ": " + sh.status + ", " + num(sh.matched) + " processed" +
            (sh.owner ? ", lease held by " + sh.owner + " until " + when(sh.lease_expires_at) : ""))
        )
      );
      return h("tr", { "data-run": r.run_id, "data-state": r.state },
        h("th", { scope: "row" }, h("code", {}, r.run_id)),
        h("td", {}, r.mode),
        h("td", {}, (r.from_version || "*") + " → " + (r.to_version || "–")),
        h("td", {}, badge(r.state)),
        h("td", { class: "progress" }, bar, " ",
          h("span", { class: "count" }, num(r.processed) + " / " + num(r.total))),
        h("td", { class: "num" }, num(r.rate_per_second) + "/s"),
        h("td", { class: "num" }, r.state === "in flight" ? duration(r.eta_seconds) : "–"),
        h("td", { class: "num" }, num(r.failures),
          r.failure_examples.length ? h("span", { class: "examples" }, " (" + r.failure_examples.join(", ") + ")") : null),
        h("td", { class: "num" }, num(r.conflicts)),
        h("td", {}, shards)
      );
    });
    fill(document.querySelector("#runs-table tbody"), rows, "No migration run recorded yet.", 10);
  }

  // -- retirement gate -------------------------------------------------------------------

  function renderGate(data) {
    document.getElementById("gate-summary").textContent =
      "What keys retire would say for each old version, judged with a soak of " + data.soak_hours +
      " h and a retention of " + data.retention_days + " days" +
      (data.sample ? ", decrypting " + data.sample + " sampled documents." : " (no document sample: the console decrypts nothing).");
    const list = document.getElementById("gate-list");
    if (!data.versions.length) {
      list.replaceChildren(h("p", { class: "empty" }, "No old version: nothing to retire."));
      return;
    }
    list.replaceChildren(...data.versions.map((g) => {
      const facts = h("dl", { class: "facts" });
      if (g.verdict !== "unknown") {
        facts.append(
          h("dt", {}, "DEKs left"), h("dd", { class: "deks-left" }, num(g.deks_left)),
          h("dt", {}, "Soak left"), h("dd", { class: "soak-left" },
            g.soak_left_seconds ? duration(g.soak_left_seconds) + " (until " + when(g.soak_until) + ")" : "none"),
          h("dt", {}, "Retention"), h("dd", {},
            g.retain_until ? "kept until " + when(g.retain_until)
              : "once retired, kept (disabled) at least " + g.retention_days + " days")
        );
      }
      const checks = h("ul", { class: "checks" }, ...(g.checks || []).map((c) =>
        h("li", { class: c.ok ? "ok" : "fail" }, h("strong", {}, c.ok ? "pass: " : "FAIL: "), c.check + ": " + c.detail)
      ));
      return h("article", { class: "gate gate-" + g.verdict, "data-version": g.version },
        h("h3", {}, "Version " + g.version + " ", badge(g.verdict)),
        h("p", { class: "reason" }, g.summary),
        facts, checks
      );
    }));
  }

  // -- audit -----------------------------------------------------------------------------

  let knownTypes = false;

  function renderAudit(data) {
    const chain = document.getElementById("chain");
    if (!data.enabled) {
      chain.className = "chain";
      chain.textContent = "This product keeps no audit trail.";
      return;
    }
    if (!knownTypes) {
      const select = document.getElementById("audit-type");
      select.append(...data.types.map((t) => h("option", { value: t }, t)));
      knownTypes = true;
    }
    const c = data.chain;
    chain.className = "chain " + (c.intact ? "chain-intact" : "chain-broken");
    chain.dataset.intact = String(c.intact);
    chain.textContent = c.intact
      ? "Chain intact: " + num(c.events) + " events verified, head " + (c.head || "–") + "."
      : "Chain BROKEN at event " + c.first_broken_seq + " (of the first " + num(c.events) +
        " read): " + c.reason + ". Run field-encrypt audit verify; see docs/audit.md.";
    const rows = data.events.map((e) =>
      h("tr", { "data-seq": e.seq },
        h("td", { class: "num" }, e.seq),
        h("td", {}, when(e.time.slice(0, 19))),
        h("td", {}, e.type),
        h("td", {}, h("code", {}, e.subject)),
        h("td", { class: "data" }, JSON.stringify(e.data))
      )
    );
    fill(document.querySelector("#audit-table tbody"), rows, "No event matches.", 5);
    document.querySelector("#audit-table caption").textContent =
      "Latest events, newest first (" + data.events.length + " of " + num(data.matching) + " matching)";
  }

  // -- scheduled rotation ----------------------------------------------------------------

  function renderRotation(data) {
    const facts = [
      ["Stage", data.stage + (data.blocked ? " (blocked: " + data.blocked + ")" : "")],
      ["Stop switch", data.stop_switch ? "ON: rotate --resume clears it" : "off"],
      ["Current version", data.current_version + ", " + data.current_age_days + " days old"],
      ["Next rotation due", data.next_rotation_due ? when(data.next_rotation_due) : "– (a rotation is under way)"],
      ["Rotating", data.from_version ? data.from_version + " → " + (data.to_version || "–") : "–"],
      ["Stage entered", when(data.stage_entered_at)],
      ["Soak until", when(data.soak_until)],
      ["Last rotation", data.last_rotation
        ? data.last_rotation.from_version + " → " + data.last_rotation.to_version + ", completed " + when(data.last_rotation.completed_at)
        : "–"],
      ["Policy", "rotate every " + data.policy.max_age_days + " days, soak " + data.policy.soak_hours +
        " h, keep retired versions " + data.policy.retention_days + " days"],
    ];
    document.getElementById("rotation-list").replaceChildren(
      ...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)])
    );
  }

  // -- polling ---------------------------------------------------------------------------

  function auditPath() {
    const type = document.getElementById("audit-type").value;
    const limit = document.getElementById("audit-limit").value;
    return "/api/audit?limit=" + encodeURIComponent(limit) + (type ? "&type=" + encodeURIComponent(type) : "");
  }

  const panels = {
    versions: { path: () => "/api/versions", render: renderVersions, every: VERSIONS_MS },
    runs: { path: () => "/api/runs", render: renderRuns, every: RUNS_MS },
    gate: { path: () => "/api/gate", render: renderGate, every: SLOW_MS },
    audit: { path: auditPath, render: renderAudit, every: AUDIT_MS },
    rotation: { path: () => "/api/rotation", render: renderRotation, every: SLOW_MS },
  };

  async function refresh(name) {
    const panel = panels[name];
    try {
      panel.render(await load(panel.path()));
      showError(name, null);
      document.getElementById("connection").hidden = true;
      document.getElementById("updated").textContent =
        "Updated " + new Date().toISOString().slice(11, 19) + " UTC.";
    } catch (err) {
      if (err instanceof TypeError) {
        const conn = document.getElementById("connection");
        conn.hidden = false;
        conn.textContent = "The console server does not answer; retrying.";
      } else {
        showError(name, String(err.message || err));
      }
    }
  }

  function schedule(name) {
    // A hidden tab reads nothing; it catches up as soon as it is shown again.
    const pending = document.hidden ? Promise.resolve() : refresh(name);
    pending.finally(() => {
      panels[name].timer = setTimeout(() => schedule(name), panels[name].every);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("audit-filter");
    form.addEventListener("submit", (e) => e.preventDefault());
    form.addEventListener("change", () => refresh("audit"));
    for (const name of Object.keys(panels)) schedule(name);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) for (const name of Object.keys(panels)) refresh(name);
    });
  });
})();
