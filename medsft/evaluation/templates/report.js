// The case browser of report.html (medsft/evaluation/html.py writes the data it reads).
// Plain script, no library and nothing fetched: it reads the JSON blob once, filters in memory
// and renders one page of cases at a time, so 1,000 questions x 4 systems stay responsive.
// Text is only ever set with textContent: answers are model output, never markup.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("case-data").textContent);
  const SYSTEMS = D.systems;
  const CASES = D.cases;
  const JUDGED = Object.keys(D.judged || {});
  const BASE = D.baseline;
  const $ = (id) => document.getElementById(id);
  const controls = {
    search: $("f-search"), slice: $("f-slice"), pair: $("f-pair"), verdict: $("f-verdict"),
    dir: $("f-dir"), mindiff: $("f-mindiff"), disagree: $("f-disagree"),
    emptycut: $("f-emptycut"), leak: $("f-leak"), size: $("f-size"),
  };
  let page = 0;
  let matched = [];
  let haystacks = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function option(select, value, label) {
    const o = el("option", null, label);
    o.value = value;
    select.appendChild(o);
  }
  function badge(cls, text, title) {
    const b = el("span", "badge " + cls, text);
    if (title) b.title = title;
    return b;
  }

  // -- the filter controls' choices, from the data ------------------------------------------
  if (D.slice_column) {
    const counts = new Map();
    for (const c of CASES) counts.set(c.g, (counts.get(c.g) || 0) + 1);
    $("f-slice-label").firstChild.textContent = D.slice_column + " ";
    for (const [g, n] of [...counts].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))) {
      option(controls.slice, g, g + " (" + n + ")");
    }
  } else {
    $("f-slice-label").hidden = true;
  }
  for (let a = 0; a < SYSTEMS.length; a++) {
    for (let b = a + 1; b < SYSTEMS.length; b++) {
      // The judged system first, its baseline second: A − B reads as "longer than the baseline".
      const [x, y] = SYSTEMS[a] === BASE ? [b, a] : [a, b];
      option(controls.pair, x + "," + y, SYSTEMS[x] + " vs " + SYSTEMS[y]);
    }
  }
  const VERDICTS = [
    ["win", "wins (both orders)"], ["loss", "loses (both orders)"], ["tie", "ties (both orders)"],
    ["disagree", "orders disagree"], ["error", "not judged (error)"],
  ];
  if (JUDGED.length) {
    for (const s of JUDGED) {
      for (const [v, label] of VERDICTS) option(controls.verdict, s + "\u0000" + v, s + " " + label + " vs " + BASE);
    }
  } else {
    $("f-verdict-label").hidden = true;
    $("judge-help").hidden = true;
  }

  // -- filtering ----------------------------------------------------------------------------
  function outcome(j) {
    if (!j) return null;
    if (j.o === "error") return "error";
    if (j.c === false) return "disagree";
    return j.o;
  }
  function haystack(c) {
    const parts = ["#" + c.i, c.q, c.r, c.g || "", c.w || "", ...c.a];
    for (const s in c.j) parts.push(c.j[s].rab || "", c.j[s].rba || "");
    return parts.join("\n").toLowerCase();
  }
  function pairOf() {
    const v = controls.pair.value;
    return v ? v.split(",").map(Number) : null;
  }
  function passes(c, words, pair) {
    if (controls.slice.value && c.g !== controls.slice.value) return false;
    if (controls.verdict.value) {
      const [s, v] = controls.verdict.value.split("\u0000");
      if (outcome(c.j[s]) !== v) return false;
    }
    const min = Number(controls.mindiff.value) || 0;
    if (min > 0) {
      let diff;
      if (pair) {
        const d = c.n[pair[0]] - c.n[pair[1]];
        diff = controls.dir.value === "a" ? d : controls.dir.value === "b" ? -d : Math.abs(d);
      } else {
        diff = Math.max(...c.n) - Math.min(...c.n);
      }
      if (diff < min) return false;
    }
    if (controls.disagree.checked && !c.f.includes("disagree")) return false;
    if (controls.emptycut.checked && !(c.f.includes("empty") || c.f.includes("cut"))) return false;
    if (controls.leak.checked && !c.f.includes("leak")) return false;
    if (words.length) {
      const h = haystacks[c.i];
      for (const w of words) if (!h.includes(w)) return false;
    }
    return true;
  }
  function filter() {
    const words = controls.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (words.length && haystacks === null) haystacks = CASES.map(haystack);
    const exact = words.length === 1 && /^#\d+$/.test(words[0]) ? Number(words[0].slice(1)) : null;
    const pair = pairOf();
    matched = exact !== null ? CASES.filter((c) => c.i === exact) : CASES.filter((c) => passes(c, words, pair));
  }

  // -- rendering ----------------------------------------------------------------------------
  const ORDER_VIEW = { better: "better", worse: "worse", equal: "equal" };
  function orderText(first, second, label) {
    if (!label) return first + " shown first: no verdict";
    return first + " shown first: " + (label === "equal" ? "equal" : first + " " + ORDER_VIEW[label]);
  }
  function verdictRow(s, j) {
    const row = el("div", "verdict");
    const kind = outcome(j);
    const text = { win: "win", loss: "loss", tie: "tie", disagree: "tie, the orders disagree", error: "not judged" }[kind];
    row.appendChild(badge(kind, s + " vs " + BASE + ": " + text));
    row.appendChild(document.createTextNode(
      " " + orderText(s, BASE, j.ab) + " · " + orderText(BASE, s, j.ba) + (j.e ? " · error: " + j.e : "")
    ));
    if (j.rab || j.rba) {
      const details = el("details");
      details.appendChild(el("summary", null, "the judge's reasons"));
      details.appendChild(el("div", "muted", s + " shown first:"));
      details.appendChild(el("div", "reason", j.rab || "(none)"));
      details.appendChild(el("div", "muted", BASE + " shown first:"));
      details.appendChild(el("div", "reason", j.rba || "(none)"));
      row.appendChild(details);
    }
    return row;
  }
  function answerCell(name, text, n, cut, cls) {
    const cell = el("div", "answer " + (cls || ""));
    const head = el("h4", null, name);
    head.appendChild(el("span", "muted", n + " chars"));
    if (cut) head.appendChild(badge("cut", "hit max_new_tokens", "generation stopped at max_new_tokens: the answer is cut"));
    if (!text.trim()) head.appendChild(badge("empty", "empty"));
    cell.appendChild(head);
    cell.appendChild(el("div", "text" + (text.trim() ? "" : " empty"), text.trim() ? text : "(empty answer)"));
    return cell;
  }
  function caseCard(c, pair) {
    const card = el("article", "case");
    card.id = "case-" + c.i;
    card.dataset.index = c.i;
    const head = el("header");
    head.appendChild(el("span", "qid", "Q" + c.i));
    if (c.g !== null && c.g !== undefined) head.appendChild(badge("slice", (D.slice_column || "slice") + ": " + c.g));
    if (c.f.includes("disagree")) head.appendChild(badge("disagree", "orders disagree"));
    if (c.f.includes("empty")) head.appendChild(badge("empty", "empty answer"));
    if (c.f.includes("cut")) head.appendChild(badge("cut", "cut answer"));
    if (c.f.includes("leak")) {
      const k = c.k;
      const why = k.d ? "question verbatim in training row " + k.d
        : "overlap with training row " + (k.m || "?") + ": question " + Math.round(k.qs * 100) + "%, reference " + Math.round(k.rs * 100) + "%";
      head.appendChild(badge("leak", "leakage hit", why));
    }
    if (c.w) head.appendChild(el("span", "muted", c.w));
    card.appendChild(head);
    card.appendChild(el("div", "question", c.q));
    const grid = el("div", "answers");
    grid.appendChild(answerCell("reference", c.r, [...c.r.trim()].length, false, "reference"));
    const shown = pair || SYSTEMS.map((_, k) => k);
    for (const k of shown) grid.appendChild(answerCell(SYSTEMS[k], c.a[k], c.n[k], c.x[k]));
    card.appendChild(grid);
    const judged = JUDGED.filter((s) => c.j[s] && (!pair || shown.some((k) => SYSTEMS[k] === s)));
    if (judged.length) {
      const box = el("div", "verdicts");
      for (const s of judged) box.appendChild(verdictRow(s, c.j[s]));
      card.appendChild(box);
    }
    return card;
  }
  function pager(box, pages) {
    box.replaceChildren();
    const button = (label, to, disabled) => {
      const b = el("button", null, label);
      b.type = "button";
      b.disabled = disabled;
      b.addEventListener("click", () => { page = to; render(); $("cases").scrollIntoView(); });
      box.appendChild(b);
    };
    button("« first", 0, page === 0);
    button("‹ previous", page - 1, page === 0);
    const size = Number(controls.size.value);
    const from = matched.length ? page * size + 1 : 0;
    const to = Math.min(matched.length, (page + 1) * size);
    box.appendChild(el("span", "count", from + "–" + to + " of " + matched.length + " matching (" + CASES.length + " questions)"));
    button("next ›", page + 1, page >= pages - 1);
    button("last »", pages - 1, page >= pages - 1);
  }
  function render() {
    const size = Number(controls.size.value);
    const pages = Math.max(1, Math.ceil(matched.length / size));
    page = Math.min(Math.max(0, page), pages - 1);
    const list = $("case-list");
    const pair = pairOf();
    const frag = document.createDocumentFragment();
    for (const c of matched.slice(page * size, (page + 1) * size)) frag.appendChild(caseCard(c, pair));
    if (!matched.length) frag.appendChild(el("div", "empty-list", "No question matches these filters."));
    list.replaceChildren(frag);
    pager($("pager-top"), pages);
    pager($("pager-bottom"), pages);
    controls.dir.disabled = !pair;
    saveState();
    window.medsftReport = { ready: true, matched: matched.length, total: CASES.length, page: page, pages: pages };
  }

  // -- state in the address (#cases?slice=...), so a filtered view can be linked -------------
  const KEYS = ["search", "slice", "pair", "verdict", "dir", "mindiff", "size"];
  const CHECKS = ["disagree", "emptycut", "leak"];
  function saveState() {
    const p = new URLSearchParams();
    for (const k of KEYS) if (controls[k].value && controls[k].value !== controls[k].dataset.initial) p.set(k, controls[k].value);
    for (const k of CHECKS) if (controls[k].checked) p.set(k, "1");
    if (page) p.set("page", String(page + 1));
    const hash = p.toString() ? "#cases?" + p.toString() : "";
    if (hash !== location.hash && (hash || location.hash.startsWith("#cases?"))) {
      history.replaceState(null, "", hash || location.pathname + location.search);
    }
  }
  function loadState() {
    const at = location.hash.indexOf("?");
    if (!location.hash.startsWith("#cases") || at < 0) return false;
    const p = new URLSearchParams(location.hash.slice(at + 1));
    for (const k of KEYS) if (p.has(k)) controls[k].value = p.get(k);
    for (const k of CHECKS) controls[k].checked = p.get(k) === "1";
    page = Math.max(0, Number(p.get("page") || 1) - 1);
    return true;
  }
  for (const k of KEYS) controls[k].dataset.initial = controls[k].value;

  function update() { page = 0; filter(); render(); }
  let timer = null;
  controls.search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 120); });
  controls.search.addEventListener("change", () => { clearTimeout(timer); update(); });
  for (const k of ["slice", "pair", "verdict", "dir", "mindiff", "size", ...CHECKS]) {
    controls[k].addEventListener("change", update);
  }
  controls.mindiff.addEventListener("input", update);
  $("f-reset").addEventListener("click", () => {
    for (const k of KEYS) controls[k].value = controls[k].dataset.initial;
    for (const k of CHECKS) controls[k].checked = false;
    update();
  });

  const linked = loadState();
  const start = page;
  filter();
  page = start;
  render();
  if (linked) $("cases").scrollIntoView();
  performance.mark("interactive");
})();
