// btcbot dashboard: live updates over server-sent events, sortable and filterable
// tables, uPlot charts, and the confirm dialog in front of every operator command.
// Every value from the server is set with textContent: nothing becomes markup.
"use strict";

(function () {
  const token = document.querySelector('meta[name="btcbot-token"]').content;
  const page = document.querySelector('meta[name="btcbot-page"]').content;
  const charts = {};   // card id -> uPlot
  const sorts = {};    // card id -> {col, dir}
  const COLORS = { "mid": "#4f7cff", "buy order": "#1aa260", "sell order": "#e0463b",
                   "fill": "#f5a623", "net PnL": "#4f7cff" };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // --- tables ---------------------------------------------------------------------------
  function cellEl(cell) {
    const td = el("td");
    if (cell !== null && typeof cell === "object") {
      if (cell.c) td.className = cell.c;
      if (cell.href) {
        const a = el("a", "", cell.t);
        a.href = cell.href;  // built by the server from a quoted id, same origin
        td.appendChild(a);
      } else {
        td.textContent = cell.t;
      }
    } else {
      td.textContent = cell;
    }
    return td;
  }

  function sortKey(text) {
    const n = parseFloat(text);
    return isNaN(n) || !/^[-+]?[\d.]/.test(text) ? text.toLowerCase() : n;
  }

  function applySortFilter(section) {
    const tbody = section.querySelector("tbody");
    if (!tbody) return;
    const s = sorts[section.id];
    const rows = Array.from(tbody.rows).filter(r => !r.classList.contains("empty"));
    if (s) {
      rows.sort((a, b) => {
        const x = sortKey(a.cells[s.col] ? a.cells[s.col].textContent : "");
        const y = sortKey(b.cells[s.col] ? b.cells[s.col].textContent : "");
        if (typeof x !== typeof y) return (typeof x === "number" ? -1 : 1) * s.dir;
        return (x < y ? -1 : x > y ? 1 : 0) * s.dir;
      });
      rows.forEach(r => tbody.appendChild(r));
    }
    section.querySelectorAll("th").forEach((th, i) => {
      th.classList.toggle("asc", !!s && s.col === i && s.dir === 1);
      th.classList.toggle("desc", !!s && s.col === i && s.dir === -1);
    });
    const input = section.querySelector("input.filter");
    const q = input ? input.value.trim().toLowerCase() : "";
    rows.forEach(r => { r.hidden = q !== "" && !r.textContent.toLowerCase().includes(q); });
  }

  function wireTable(section) {
    section.querySelectorAll("th").forEach((th, i) => {
      th.addEventListener("click", () => {
        const s = sorts[section.id];
        sorts[section.id] = { col: i, dir: s && s.col === i ? -s.dir : 1 };
        applySortFilter(section);
      });
    });
    const input = section.querySelector("input.filter");
    if (input) input.addEventListener("input", () => applySortFilter(section));
  }

  function renderTable(section, card) {
    const tbody = section.querySelector("tbody");
    const fresh = el("tbody");
    if (card.rows.length === 0) {
      const tr = el("tr", "empty");
      const td = el("td", "", card.empty);
      td.colSpan = card.columns.length;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    for (const row of card.rows) {
      const tr = el("tr");
      for (const cell of row) tr.appendChild(cellEl(cell));
      fresh.appendChild(tr);
    }
    tbody.replaceWith(fresh);
    applySortFilter(section);
  }

  // --- key/value lists and banners --------------------------------------------------------
  function renderKv(section, card) {
    const dl = el("dl", "kv");
    for (const item of card.items) {
      dl.appendChild(el("dt", "", item.k));
      dl.appendChild(el("dd", item.c, item.v));
    }
    section.querySelector("dl").replaceWith(dl);
  }

  function renderBanner(section, card) {
    const box = section.querySelector(".banner");
    box.className = "banner " + card.c;
    box.querySelector(".big").textContent = card.state;
    const ul = el("ul", "lines");
    for (const line of card.lines) ul.appendChild(el("li", "", line));
    box.querySelector("ul").replaceWith(ul);
  }

  // --- charts ---------------------------------------------------------------------------
  function chartData(card) { return [card.x, ...card.y]; }

  function chartWidth(div) { return Math.max(260, div.clientWidth || 600); }

  function makeChart(section, card) {
    const div = section.querySelector(".chart");
    const series = [{ value: (u, v) => v == null ? "-" : new Date(v * 1000).toISOString().slice(11, 19) }];
    for (const name of card.series) {
      const color = COLORS[name] || "#888";
      const line = name === "mid" || name === "net PnL";
      series.push(line
        ? { label: name, stroke: color, width: 2, spanGaps: true }
        : { label: name, stroke: color, width: 0, paths: () => null,
            points: { show: true, size: 9, fill: color, stroke: color } });
    }
    const opts = {
      width: chartWidth(div), height: 240, series: series,
      tzDate: ts => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      axes: [{ stroke: "#8d97b0", grid: { stroke: "#263049" }, ticks: { stroke: "#263049" } },
             { stroke: "#8d97b0", grid: { stroke: "#263049" }, ticks: { stroke: "#263049" },
               size: 80 }],
      legend: { live: true },
    };
    charts[card.id] = new uPlot(opts, chartData(card), div);
  }

  function renderChart(section, card) {
    const chart = charts[card.id];
    if (!chart) { makeChart(section, card); return; }
    chart.setData(chartData(card));
  }

  window.addEventListener("resize", () => {
    for (const id in charts) {
      const div = document.querySelector("#card-" + CSS.escape(id) + " .chart");
      if (div) charts[id].setSize({ width: chartWidth(div), height: 240 });
    }
  });

  // --- cards ----------------------------------------------------------------------------
  function newSection(card) {
    const section = el("section", "card card-" + card.kind);
    section.id = "card-" + card.id;
    section.dataset.kind = card.kind;
    section.appendChild(el("h2", "", card.title));
    if (card.kind === "chart") section.appendChild(el("div", "chart"));
    if (card.kind === "kv") section.appendChild(el("dl", "kv"));
    if (card.kind === "table") {
      if (card.filterable) {
        const input = el("input", "filter");
        input.type = "search";
        input.placeholder = "filter rows…";
        section.appendChild(input);
      }
      const wrap = el("div", "scroll");
      const t = el("table");
      const tr = el("tr");
      card.columns.forEach(c => tr.appendChild(el("th", "", c)));
      const thead = el("thead");
      thead.appendChild(tr);
      t.appendChild(thead);
      t.appendChild(el("tbody"));
      wrap.appendChild(t);
      section.appendChild(wrap);
    }
    if (card.kind === "banner") {
      const box = el("div", "banner");
      box.appendChild(el("div", "big"));
      box.appendChild(el("ul", "lines"));
      section.appendChild(box);
    }
    document.getElementById("cards").appendChild(section);
    if (card.kind === "table") wireTable(section);
    return section;
  }

  function render(view) {
    const h = view.header;
    const pill = document.getElementById("hdr-state");
    pill.textContent = h.state;
    pill.className = "pill " + h.c;
    document.getElementById("hdr-detail").textContent = "mode " + h.mode + " · " + h.detail;
    for (const card of view.cards) {
      const section = document.getElementById("card-" + card.id) || newSection(card);
      if (card.kind === "table") renderTable(section, card);
      else if (card.kind === "kv") renderKv(section, card);
      else if (card.kind === "banner") renderBanner(section, card);
      else if (card.kind === "chart") renderChart(section, card);
    }
  }

  // --- operator commands ----------------------------------------------------------------
  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Btcbot-Token": token },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = { ok: false, error: resp.statusText }; }
    return data;
  }

  function wireCommands() {
    const dialog = document.getElementById("confirm");
    const result = document.getElementById("command-result");
    document.querySelectorAll("button[data-command]").forEach(button => {
      button.addEventListener("click", async () => {
        const command = button.dataset.command;
        const offer = await post("/api/confirm", { command: command });
        if (!offer.ok) { result.textContent = "refused: " + offer.error; return; }
        document.getElementById("confirm-prompt").textContent = offer.prompt;
        result.textContent = command + ": confirm?";
        dialog.returnValue = "";
        dialog.onclose = async () => {
          if (dialog.returnValue !== "ok") { result.textContent = command + ": cancelled"; return; }
          result.textContent = command + ": sending…";
          const reason = document.getElementById("confirm-reason").value;
          const done = await post("/api/command", { command: command, reason: reason,
                                                   confirm_token: offer.confirm_token });
          result.textContent = command + ": " + (done.ok ? done.detail : "FAILED: " + done.error);
        };
        dialog.showModal();
      });
    });
  }

  // --- live updates ---------------------------------------------------------------------
  function connect() {
    const live = document.getElementById("live");
    if (!["overview", "actors", "markets", "positions", "orders", "decisions", "bus"].includes(page)) {
      live.textContent = "";
      return;
    }
    const source = new EventSource("/events?page=" + encodeURIComponent(page));
    source.onopen = () => { live.textContent = "● live"; live.className = "good"; };
    source.onerror = () => { live.textContent = "○ reconnecting"; live.className = "bad"; };
    source.onmessage = ev => {
      render(JSON.parse(ev.data));
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    };
  }

  document.querySelectorAll("section.card-table").forEach(wireTable);
  const initial = JSON.parse(document.getElementById("initial-view").textContent);
  for (const card of initial.cards) {
    if (card.kind === "chart") makeChart(document.getElementById("card-" + card.id), card);
  }
  wireCommands();
  connect();
})();
