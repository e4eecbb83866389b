"""Reports for people: one self-contained HTML page per search (opens offline, no CDN).

:func:`render_search_report` reads only the search's JSON (``search.json``: candidates and the
baseline, in one set of units) and draws the Pareto plot as inline SVG (accuracy vs latency,
marker area ∝ size, the chosen candidate highlighted, failed candidates listed apart) next to a
sortable table of every candidate with the reason it was accepted, rejected or stopped early
(failed ones in a table of their own), the chosen variant's per-layer pruning widths and layers
kept in float, roofline-style efficiency (percent of this machine's GEMM peak), the original's
``inspect`` checklist and the machine and versions. :func:`render_search_markdown` writes the
same content as Markdown (``report.md``).
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_search_markdown", "render_search_report", "svg_pareto"]


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _fmt(v: Any, pattern: str) -> str:
    return "—" if v is None else format(v, pattern)


def svg_pareto(data: dict[str, Any], width: int = 720, height: int = 420) -> str:
    """The Pareto plot as an ``<svg>`` element: quality (accuracy, else cosine) vs latency."""
    batches = _batches(data)
    batch = batches[0]
    base = data["baseline"]
    relative = len(batches) > 1  # several batch sizes: latency relative to the original

    def x_of(c: dict[str, Any]) -> float | None:
        if not relative:
            return (c.get("latency_ms") or {}).get(batch)
        ratios = [((c.get("speedup") or {}).get(b) or {}).get("ratio") for b in batches]
        if any(not r for r in ratios):
            return None
        prod = 1.0
        for r in ratios:
            prod *= float(r)  # type: ignore[arg-type]
        return float(prod ** (-1.0 / len(ratios)))

    pts = []
    for c in data["candidates"]:
        lat = x_of(c)
        q = c.get("accuracy") if c.get("accuracy") is not None else c.get("cosine")
        if c.get("status") != "failed" and lat is not None and q is not None:
            pts.append((float(lat), float(q), float(c.get("size_mb") or 0.1), c))
    base_lat = 1.0 if relative else (base.get("latency_ms") or {}).get(batch)
    base_q = base.get("accuracy")
    xs = [p[0] for p in pts] + ([base_lat] if base_lat else [])
    ys = [p[1] for p in pts] + ([base_q] if base_q is not None else [])
    if not xs or not ys:
        return '<p class="empty">No candidate was built and measured.</p>'
    pad = 56
    x0, x1 = 0.0, max(xs) * 1.08
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-6:
        y0, y1 = y0 - 0.01, y1 + 0.01
    y0, y1 = y0 - 0.08 * (y1 - y0), y1 + 0.08 * (y1 - y0)
    smax = max([p[2] for p in pts] + [1e-6])

    def sx(v: float) -> float:
        return pad + (v - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(v: float) -> float:
        return height - pad - (v - y0) / (y1 - y0) * (height - 2 * pad)

    front = set(data.get("pareto") or [])
    chosen = (data.get("chosen") or {}).get("key")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Pareto plot">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#444"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>',
        f'<text x="{width / 2}" y="{height - 14}" text-anchor="middle" font-size="13">'
        + (
            f"latency relative to the original (geometric mean over batches "
            f"{', '.join(batches)}) — lower is better</text>"
            if relative
            else f"latency p50 at batch {batch} (ms) — lower is better</text>"
        ),
        f'<text x="16" y="{height / 2}" font-size="13" text-anchor="middle" '
        f'transform="rotate(-90 16 {height / 2})">'
        f"{'top-1 accuracy' if base_q is not None else 'output cosine'} — higher is better</text>",
    ]
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        parts.append(
            f'<text x="{sx(xv):.1f}" y="{height - pad + 16}" font-size="11" '
            f'text-anchor="middle">{xv:.3g}</text>'
        )
        parts.append(
            f'<text x="{pad - 6}" y="{sy(yv) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{yv:.4g}</text>'
        )
    if base_lat and base_q is not None:
        parts.append(
            f'<rect x="{sx(base_lat) - 6:.1f}" y="{sy(base_q) - 6:.1f}" width="12" height="12" '
            'fill="#888"><title>original</title></rect>'
        )
    for lat, q, size, c in pts:
        r = 4 + 14 * (size / smax) ** 0.5
        color = (
            "#d62728"
            if c.get("key") == chosen
            else ("#1f77b4" if c.get("key") in front else "#9ecae1")
        )
        stroke = ' stroke="#000" stroke-width="2"' if c.get("key") == chosen else ""
        label = _esc(" → ".join(c.get("steps") or []))
        parts.append(
            f'<circle cx="{sx(lat):.1f}" cy="{sy(q):.1f}" r="{r:.1f}" fill="{color}" '
            f'fill-opacity="0.75"{stroke}><title>{label} — {lat:.3f}{"×" if relative else " ms"}, {q:.4f}, '
            f"{size:.3f} MB ({_esc(c.get('status'))})</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0} td.l,th.l{text-align:left}
tr.accepted td{background:#f1faf1} tr.failed td{color:#999} tr.chosen td{background:#ffe9e6}
.legend span{display:inline-block;margin-right:16px} .dot{display:inline-block;width:10px;
height:10px;border-radius:5px;margin-right:4px;vertical-align:middle}
.kv td{text-align:left} .note{color:#666;font-size:13px}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, i){
  th.addEventListener('click', function(){
    var tb = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(tb.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function(a, b){
      var x = a.cells[i].dataset.v || a.cells[i].textContent;
      var y = b.cells[i].dataset.v || b.cells[i].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? r : -r;
    });
    rows.forEach(function(r){ tb.appendChild(r); });
  });
});
"""


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script>`` (no ``</script>`` can end it early)."""
    return json.dumps(data, default=str).replace("<", "\\u003c")


def _batches(data: dict[str, Any]) -> list[str]:
    cons = data.get("constraints", {})
    return [str(b) for b in (cons.get("batch_sizes") or [cons.get("batch_size", 1)])]


def _steps(c: dict[str, Any]) -> str:
    return " → ".join(c.get("steps") or []) or "original (re-exported)"


def _pct(v: Any) -> str:
    # over 100%: the GEMM peak was measured low (a busy machine) — flagged, never hidden
    return "—" if v is None else f"{v:.1f}%" + ("†" if v > 100 else "")


def _chosen_sentence(data: dict[str, Any]) -> str:
    chosen = data.get("chosen")
    base = data["baseline"]
    if not chosen:
        return (
            "No candidate met the constraints; nothing was chosen. The table says why each "
            "candidate was turned down."
        )
    speeds = ", ".join(
        f"{chosen['speedup'][b]['ratio']:.2f}× at batch {b} (95% CI "
        f"{chosen['speedup'][b]['ci95'][0]:.2f}–{chosen['speedup'][b]['ci95'][1]:.2f})"
        for b in _batches(data)
        if b in (chosen.get("speedup") or {})
    )
    acc = chosen.get("accuracy")
    quality = (
        f"{acc:.2%} top-1 (drop {_fmt(chosen.get('drop_points'), '+.2f')} points, 95% CI "
        f"{_fmt((chosen.get('drop_ci95') or [None])[0], '+.2f')} … "
        f"{_fmt((chosen.get('drop_ci95') or [None, None])[1], '+.2f')})"
        if acc is not None
        else f"output cosine {_fmt(chosen.get('cosine'), '.5f')} to the original"
    )
    return (
        f"Chosen: {_steps(chosen)} in {chosen.get('runtime')} — {quality}; {speeds}; "
        f"{_fmt(chosen.get('size_mb'), '.3f')} MB vs {_fmt(base.get('size_mb'), '.3f')} MB."
    )


def _layer_rows(chosen: dict[str, Any] | None) -> tuple[list[tuple[str, int, int]], dict[str, Any]]:
    det = (chosen or {}).get("details") or {}
    rows = [(n, int(v[0]), int(v[1])) for n, v in (det.get("pruned_channels") or {}).items()]
    return rows, det.get("kept_float") or {}


def render_search_report(data: dict[str, Any]) -> str:
    """A self-contained HTML report of an ``optimize`` run (``search.json``'s content)."""
    batches = _batches(data)
    batch = batches[0]
    base = data["baseline"]
    chosen = data.get("chosen")
    head = "".join(
        f"<th>ms b={_esc(b)}</th><th>speed-up b={_esc(b)} [95% CI]</th>" for b in batches
    )
    rows, failed = [], []
    for c in data["candidates"]:
        if c.get("status") == "failed":
            failed.append(
                f'<tr><td class="l">{_esc(_steps(c))}</td>'
                f'<td class="l">{_esc(c.get("reason"))}</td></tr>'
            )
            continue
        cls = "chosen" if chosen and c.get("key") == chosen.get("key") else c.get("status", "")
        dci = c.get("drop_ci95") or [None, None]
        cells = []
        for b in batches:
            lat = (c.get("latency_ms") or {}).get(b)
            sp = (c.get("speedup") or {}).get(b) or {}
            ci = sp.get("ci95") or [None, None]
            cells.append(
                f'<td data-v="{lat or ""}">{_fmt(lat, ".3f")}</td>'
                f'<td data-v="{sp.get("ratio") or ""}">{_fmt(sp.get("ratio"), ".2f")}× '
                f"[{_fmt(ci[0], '.2f')}–{_fmt(ci[1], '.2f')}]</td>"
            )
        rows.append(
            f'<tr class="{_esc(cls)}">'
            f'<td class="l">{_esc(_steps(c))}</td>'
            f'<td class="l">{_esc(c.get("status"))}</td>'
            f'<td data-v="{c.get("accuracy") or ""}">{_fmt(c.get("accuracy"), ".2%")}</td>'
            f'<td data-v="{c.get("drop_points") if c.get("drop_points") is not None else ""}">'
            f"{_fmt(c.get('drop_points'), '+.2f')}</td>"
            f"<td>{_fmt(dci[0], '+.2f')} … {_fmt(dci[1], '+.2f')}</td>"
            f"<td>{_fmt(c.get('cosine'), '.5f')}</td>"
            + "".join(cells)
            + f'<td data-v="{c.get("size_mb") or ""}">{_fmt(c.get("size_mb"), ".3f")}</td>'
            f"<td>{_pct((c.get('percent_of_peak') or {}).get(batch))}</td>"
            f'<td class="l">{_esc(c.get("runtime"))}</td>'
            f"<td>{_fmt(c.get('build_seconds'), '.1f')}</td>"
            f'<td class="l">{_esc(c.get("reason"))}</td></tr>'
        )
    cons = data.get("constraints", {})
    layers, kept = _layer_rows(chosen)
    layer_html = ""
    if layers:
        layer_html += (
            '<h2>Per-layer pruning (chosen)</h2><table><thead><tr><th class="l">layer</th>'
            "<th>channels before</th><th>after</th><th>kept</th></tr></thead><tbody>"
            + "".join(
                f'<tr><td class="l">{_esc(n)}</td><td>{a}</td><td>{b}</td><td>{b / a:.0%}</td></tr>'
                for n, a, b in layers
            )
            + "</tbody></table>"
        )
    if kept:
        layer_html += (
            "<h2>Layers kept in float by accuracy-aware quantization (chosen)</h2><table>"
            '<thead><tr><th class="l">layer</th><th class="l">why</th></tr></thead><tbody>'
            + "".join(
                f'<tr><td class="l">{_esc(n)}</td><td class="l">{_esc(w)}</td></tr>'
                for n, w in kept.items()
            )
            + "</tbody></table>"
        )
    eff = "".join(
        f"<tr><td>batch {_esc(b)}</td><td>{_pct((base.get('percent_of_peak') or {}).get(b))}</td>"
        f"<td>{_pct(((chosen or {}).get('percent_of_peak') or {}).get(b))}</td></tr>"
        for b in batches
    )
    checklist = "".join(
        f'<tr><td class="l">{_esc(f.get("severity"))}</td><td class="l">{_esc(f.get("title"))}'
        f'</td><td class="l">{_esc(f.get("recommendation"))}</td></tr>'
        for f in data.get("checklist") or []
    )
    m = data.get("machine") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    failed_html = (
        '<h2>Failed candidates</h2><table><thead><tr><th class="l">recipe</th>'
        f'<th class="l">error</th></tr></thead><tbody>{"".join(failed)}</tbody></table>'
        if failed
        else ""
    )
    base_lat = "; ".join(
        f"{_fmt((base.get('latency_ms') or {}).get(b), '.3f')} ms at batch {_esc(b)}"
        for b in batches
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>torchslim optimize — {_esc(base.get("source"))}</title>
<style>{_CSS}</style></head><body>
<h1>torchslim optimize — {_esc(base.get("source"))}</h1>
<p id="verdict"><b>{_esc(_chosen_sentence(data))}</b>
{f"Artifact: <code>{_esc(data.get('artifact'))}</code>" if chosen else ""}</p>
<h2>Original vs chosen</h2>
<table class="kv"><tr><td>original top-1</td><td>{_fmt(base.get("accuracy"), ".2%")} on
{_esc(base.get("eval_data"))} ({_esc(base.get("eval_samples"))} samples)</td></tr>
<tr><td>original latency</td><td>{base_lat}</td></tr>
<tr><td>original size</td><td>{_fmt(base.get("size_mb"), ".3f")} MB</td></tr>
<tr><td>constraints</td><td>drop ≤ {_esc(cons.get("max_drop_points"))} points; speed-up 95% CI
above 1 at batch {_esc(", ".join(batches))}; size ≤ {_esc(cons.get("max_size_mb") or "any")} MB;
latency ≤ {_esc(cons.get("target_latency_ms") or "any")} ms; peak memory ≤
{_esc(cons.get("max_memory_mb") or "any")} MiB</td></tr>
<tr><td>search</td><td>{len(data["candidates"])} candidates in {_esc(data.get("seconds"))} s;
stopped: {_esc(data.get("stopped"))}</td></tr></table>
<h2>Pareto plot</h2>
<p class="legend"><span><i class="dot" style="background:#d62728"></i>chosen</span>
<span><i class="dot" style="background:#1f77b4"></i>on the front</span>
<span><i class="dot" style="background:#9ecae1"></i>dominated</span>
<span><i class="dot" style="background:#888;border-radius:0"></i>original</span>
<span>marker area ∝ size (MB)</span></p>
{svg_pareto(data)}
<h2>Every candidate</h2>
<p class="note">Click a column to sort. Accuracy and drop are measured on the evaluation data in
the runtime each candidate ships in, after re-loading its files; speed-ups come from the original
and the candidate measured interleaved. "pruned" candidates stopped after their short recovery
(multi-fidelity); failed ones are listed below with the error that stopped them.</p>
<table class="sortable" id="candidates"><thead><tr><th class="l">recipe</th>
<th class="l">status</th><th>top-1</th><th>drop (pts)</th><th>drop 95% CI</th><th>cosine</th>
{head}<th>MB</th><th>% of peak b={_esc(batch)}</th><th class="l">runtime</th><th>build s</th>
<th class="l">reason</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
{failed_html}
{layer_html}
<h2>Efficiency (percent of this machine's GEMM peak)</h2>
<p class="note">Achieved FLOP/s (the model's FLOPs — the pruned model's when pruned — over its
latency) divided by a GEMM micro-benchmark's peak at the same threads, for the precision it runs
in: {_esc(json.dumps(base.get("peak_gflops")))} GFLOP/s. † over 100%: the peak was measured
while the machine was busy, so it is too low — compare the columns with each other only.</p>
<table><thead><tr><th></th><th>original</th><th>chosen</th></tr></thead><tbody>{eff}</tbody></table>
<h2>Checklist of the original (torchslim inspect)</h2>
<table><thead><tr><th class="l">severity</th><th class="l">finding</th><th class="l">next step</th>
</tr></thead><tbody>{checklist}</tbody></table>
<h2>Machine and versions</h2>
<p class="note">{_esc(m.get("cpu_model"))} · {_esc(m.get("physical_cores"))} cores ·
{_esc(" ".join(m.get("isa") or []))} · {_esc(m.get("os"))} · python {_esc(m.get("python"))} ·
{_esc(versions)} · machine id {_esc(m.get("fingerprint"))}</p>
<script type="application/json" id="search-data">{_json_for_script(data)}</script>
<script>{_JS}</script>
</body></html>
"""


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_search_markdown(data: dict[str, Any]) -> str:
    """The same report as Markdown (``report.md``): verdict, candidates, per-layer facts,
    efficiency, checklist, machine."""
    batches = _batches(data)
    base = data["baseline"]
    chosen = data.get("chosen")
    lines = [f"# torchslim optimize — {base.get('source')}", "", _chosen_sentence(data), ""]
    if chosen:
        lines += [f"Artifact: `{data.get('artifact')}`", ""]
    acc = base.get("accuracy")
    lines += [
        f"Original: {'—' if acc is None else f'{acc:.2%} top-1'} on {base.get('eval_data')} "
        f"({base.get('eval_samples')} samples); "
        + "; ".join(f"{(base.get('latency_ms') or {}).get(b)} ms at batch {b}" for b in batches)
        + f"; {_fmt(base.get('size_mb'), '.3f')} MB. {len(data['candidates'])} candidates in "
        f"{data.get('seconds')} s (stopped: {data.get('stopped')}).",
        "",
        "| recipe | status | top-1 | drop (pts) | "
        + " | ".join(f"ms b={b} | speed-up b={b}" for b in batches)
        + " | MB | reason |",
        "|" + "---|" * (5 + 2 * len(batches)),
    ]
    for c in data["candidates"]:
        cells = []
        for b in batches:
            sp = (c.get("speedup") or {}).get(b) or {}
            ci = sp.get("ci95") or [None, None]
            cells += [
                _fmt((c.get("latency_ms") or {}).get(b), ".3f"),
                f"{_fmt(sp.get('ratio'), '.2f')}× [{_fmt(ci[0], '.2f')}–{_fmt(ci[1], '.2f')}]",
            ]
        mark = "**★** " if chosen and c.get("key") == chosen.get("key") else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    mark + _md(_steps(c)),
                    _md(c.get("status")),
                    _fmt(c.get("accuracy"), ".2%"),
                    _fmt(c.get("drop_points"), "+.2f"),
                    *cells,
                    _fmt(c.get("size_mb"), ".3f"),
                    _md(c.get("reason") or ""),
                ]
            )
            + " |"
        )
    layers, kept = _layer_rows(chosen)
    if layers:
        lines += [
            "",
            "## Per-layer pruning (chosen)",
            "",
            "| layer | before | after |",
            "|---|---|---|",
        ]
        lines += [f"| {_md(n)} | {a} | {b} |" for n, a, b in layers]
    if kept:
        lines += ["", "## Layers kept in float (chosen)", ""]
        lines += [f"- `{n}`: {_md(w)}" for n, w in kept.items()]
    lines += [
        "",
        "## Efficiency (percent of GEMM peak)",
        "",
        "| batch | original | chosen |",
        "|---|---|---|",
    ]
    lines += [
        f"| {b} | {_pct((base.get('percent_of_peak') or {}).get(b))} | "
        f"{_pct(((chosen or {}).get('percent_of_peak') or {}).get(b))} |"
        for b in batches
    ]
    if data.get("checklist"):
        lines += ["", "## Checklist of the original", ""]
        lines += [
            f"- **{f.get('severity')}** {_md(f.get('title'))}"
            + (f" — {_md(f.get('recommendation'))}" if f.get("recommendation") else "")
            for f in data["checklist"]
        ]
    m = data.get("machine") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    lines += [
        "",
        "## Machine",
        "",
        f"{m.get('cpu_model')} · {m.get('physical_cores')} cores · {m.get('os')} · "
        f"python {m.get('python')} · {versions}",
        "",
    ]
    return "\n".join(lines)
