"""The HTML report of a comparison (``mlpkg runs report``): :func:`render` turns a
comparison document (format 1, :func:`mlpkg.experiments.compare.compare`, described in
docs/experiments.md) into one static page.

The page is self-contained: one HTML file with its stylesheet inline and its plots as
inline SVG (:mod:`mlpkg.experiments.plots`); no script, font, image or stylesheet is
fetched, so it opens offline and can be mailed or archived as it is. It holds, in order:

1. a header: the title, when the page was made (UTC), the apps, the machine;
2. the table: per group its label, runs ok/total, samples/s (median and min–max), the
   p50/p90/p99 latency medians (ms), mAP, and LoadGen's VALID/INVALID counts;
3. the verdicts (each group against the base, the first group with figures);
4. the plots: throughput with its spread, latency percentiles, mAP (each only when some
   group has that figure);
5. what differs besides the closure: arguments, settings as LoadGen read them back, the
   machine;
6. the closure diff of each distinct closure against the base's (the first with a lock):
   version changes, rebuilds (with the causes and the dependency chains), added, removed;
7. failures (each failed run with its ``error:`` line, the problems of points that never
   ran) and pending points, in red;
8. each run's command line to reproduce it.

Every string from the document is escaped (run records are data from others). A missing
or malformed part of the document is shown as missing ("—"), never an exception: a
report of a broken experiment is when it is needed most. Given the same document and
``made``, the page is byte-for-byte the same.
"""

from __future__ import annotations

import html
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlpkg.experiments import figures as fig
from mlpkg.experiments import plots
from mlpkg.experiments.compare import FIGURE_NAMES
from mlpkg.experiments.plots import stats

Doc = Mapping[str, Any]  # a part of the comparison document

_CSS = """
body{font:14px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}h1{font-size:24px;margin:0 0 6px}
h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #e3e3e3;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#555;margin:0}.meta b{color:#222}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}th{background:#f6f7f9}
th,td{border-bottom:1px solid #e6e6e6;padding:5px 10px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.v{white-space:nowrap}
.dim{color:#777}.bad{color:#b00020}.ok{color:#1a7f37}.pending{color:#9a6700}
ul{margin:4px 0 10px;padding-left:22px}
code,.error{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace}
code{background:#f4f4f6;padding:1px 4px;border-radius:3px;word-break:break-all}
code.id{word-break:normal;white-space:nowrap}details{margin-top:3px}summary{font-size:12px}
figure{margin:12px 0 24px}figcaption{color:#555;font-size:13px;margin-bottom:4px}
figure svg{max-width:100%;height:auto;display:block}li{margin:2px 0}
.error{color:#b00020;background:#fdecee;border-left:3px solid #b00020;padding:6px 10px;
 margin:6px 0;white-space:pre-wrap}
"""


def esc(value: object) -> str:
    """Any value from the document, as HTML text."""
    return html.escape("" if value is None else str(value), quote=True)


def render(
    doc: Doc,
    title: str | None = None,
    *,
    made: float | None = None,
    machine: Doc | None = None,
) -> str:
    """The report page of comparison document ``doc``. ``title`` defaults to the
    experiment's id (or "Comparison of N groups"); ``made`` is the time shown as when it
    was made (seconds since the epoch, default now); ``machine`` is the machine table of
    a run record (``result.json``'s ``machine``) shown in the header, the document
    having only the machine's differences."""
    groups = [g for g in _listed(doc.get("groups")) if isinstance(g, Mapping)]
    title = title or _default_title(groups)
    parts = [
        _header(doc, groups, title, time.time() if made is None else made, machine),
        _table(groups),
        _verdicts(doc, groups),
        _plots(groups),
        _differences(doc, groups),
        _closure(doc, groups),
        _failures(groups),
        _reproduce(groups),
    ]
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _default_title(groups: Sequence[Doc]) -> str:
    experiments = sorted({str(g["experiment"]) for g in groups if g.get("experiment")})
    if len(experiments) == 1 and all(g.get("experiment") for g in groups):
        return f"Experiment {experiments[0]}"
    return f"Comparison of {len(groups)} group{'s' if len(groups) != 1 else ''}"


def _header(doc: Doc, groups: Sequence[Doc], title: str, made: float, machine: Doc | None) -> str:
    apps = _mapping(doc.get("apps"))
    app_text = ", ".join(str(a) for a in _listed(apps.get("values"))) or "—"
    if apps.get("note"):
        app_text += f" ({apps['note']})"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(made))
    runs = sum(len(_listed(g.get("runs"))) for g in groups)
    lines = [
        f"<header>\n<h1>{esc(title)}</h1>",
        f'<p class="meta">Made <b>{esc(when)}</b> by <code>mlpkg runs report</code> from '
        f"{len(groups)} group(s), {runs} run(s).</p>",
        f'<p class="meta">App: <b>{esc(app_text)}</b></p>',
        f'<p class="meta">Machine: <b>{esc(_machine_text(doc, machine))}</b></p>\n</header>',
    ]
    return "\n".join(lines)


def _machine_text(doc: Doc, machine: Doc | None) -> str:
    differs = bool(_mapping(doc.get("machine")).get("differ"))
    m = machine or {}
    memory = fig.number(m.get("memory_bytes"))  # None for an integer too large (10**400)
    where = ", ".join(
        str(part)
        for part in (
            m.get("hostname"),
            m.get("cpu"),
            f"{m['cpus']} CPUs" if m.get("cpus") else None,
            f"{memory / 2**30:.0f} GiB" if memory is not None else None,
            " ".join(str(m[k]) for k in ("system", "release", "machine") if m.get(k)),
            f"Python {m['python']}" if m.get("python") else None,
        )
        if part
    )
    if differs:
        return (f"{where} (the first group's); " if where else "") + "differs between groups"
    return where or "the same for every group"


def _table(groups: Sequence[Doc]) -> str:
    head = (
        "<tr><th>#</th><th>group</th><th>runs ok</th><th>samples/s</th><th>min–max</th>"
        "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>mAP %</th><th>LoadGen</th></tr>"
    )
    apps = {str(g.get("app")) for g in groups}
    rows = [_table_row(i, g, _notes(g, groups, len(apps) > 1)) for i, g in enumerate(groups)]
    return f"<h2>Results</h2>\n<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def _notes(g: Doc, groups: Sequence[Doc], apps_differ: bool) -> str:
    """What tells a group apart under its label: the versions (``versions``) that are not
    the same in every group, and its app when the apps differ."""
    tables = [_mapping(gr.get("versions")) for gr in groups]
    mine = _mapping(g.get("versions"))
    keys = sorted({k for t in tables for k in t if len({str(t.get(k)) for t in tables}) > 1})
    notes = [f"{k.removesuffix('_version')} {mine[k]}" for k in keys if k in mine]
    if apps_differ:
        notes.insert(0, str(g.get("app")))
    return f'<br><span class="dim">{esc(", ".join(notes))}</span>' if notes else ""


def _mapping(value: object) -> Doc:
    return value if isinstance(value, Mapping) else {}


def _listed(value: object) -> list[Any]:
    """A list from the document as a list; None as none; anything else as one item."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _table_row(i: int, g: Doc, notes: str) -> str:
    runs = [r for r in _listed(g.get("runs")) if isinstance(r, Mapping)]
    ok = sum(1 for r in runs if r.get("status") == "ok")
    tput = stats(g, "samples_per_second")
    spread = f"{num(tput.get('min'))}–{num(tput.get('max'))}" if tput else "—"
    spread = "1 run" if tput and tput.get("n") == 1 else spread
    lat = [_median(stats(g, "latency_ms", p)) for p in ("p50", "p90", "p99")]
    result = _mapping(_mapping(g.get("figures")).get("result"))
    loadgen = ", ".join(f"{k} {v}" for k, v in sorted(result.items())) if result else "—"
    runs_bad = " bad" if ok < len(runs) or not runs else ""
    loadgen_bad = ' class="bad"' if set(result) - {"VALID"} else ""
    cells = [
        f'<td class="n">{i + 1}</td>',
        f"<td>{esc(g.get('label'))}{notes}</td>",
        f'<td class="n{runs_bad}">{ok}/{len(runs)}</td>',
        f'<td class="n"><b>{_median(tput)}</b></td>',
        f'<td class="n">{esc(spread)}</td>',
        *(f'<td class="n">{v}</td>' for v in lat),
        f'<td class="n">{_median(stats(g, "mAP"))}</td>',
        f"<td{loadgen_bad}>{esc(loadgen)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _median(s: Doc | None) -> str:
    return esc(num(s["median"])) if s else "—"


def num(value: object) -> str:
    """A figure as the table prints it (4 significant digits); "—" when not a finite
    number."""
    found = fig.number(value)
    return "—" if found is None else plots.fmt(found)


def _verdicts(doc: Doc, groups: Sequence[Doc]) -> str:
    """One row per pair of groups compared, one column per figure compared."""
    verdicts = [v for v in _listed(doc.get("verdicts")) if isinstance(v, Mapping)]
    if not verdicts:
        return ""
    seen = {str(v.get("figure")) for v in verdicts}
    names = [n for n in FIGURE_NAMES if n in seen] + sorted(seen - set(FIGURE_NAMES))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for v in verdicts:
        pair = (_ref(groups, v.get("other")), _ref(groups, v.get("base"), short=True))
        cells.setdefault(pair, {})[str(v.get("figure"))] = _verdict_cell(v)
    head = "<tr><th>group</th><th>against</th>" + "".join(
        f"<th>{esc(FIGURE_NAMES.get(n, n))}</th>" for n in names
    )
    rows = [
        f"<tr><td>{other}</td><td>{base}</td>"
        + "".join(f'<td class="v">{row.get(n, "—")}</td>' for n in names)
        + "</tr>"
        for (other, base), row in cells.items()
    ]
    note = (
        '<p class="dim">The ratio of the medians; a verdict only where the min–max ranges '
        "of the repeats do not overlap (else <i>within spread</i>, or <i>1 run</i> where a "
        "side has a single run: <code>mlpkg sweep --repeat N</code> gives a spread).</p>"
    )
    return f"<h2>Verdicts</h2>\n{note}\n<table>\n{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _verdict_cell(v: Doc) -> str:
    ratio = v.get("ratio")
    ratio_text = f"×{ratio:.3f}" if isinstance(ratio, int | float) else "—"
    verdict = str(v.get("verdict"))
    if verdict in (fig.HIGHER, fig.LOWER):
        better = (verdict == fig.LOWER) == (str(v.get("figure")) in fig.LOWER_IS_BETTER)
        word = f"{verdict}: {'better' if better else 'worse'}"
        return f'<b class="{"ok" if better else "bad"}">{esc(word)}</b> {esc(ratio_text)}'
    verdict = "1 run" if verdict == fig.ONE_RUN else verdict
    return f'{esc(ratio_text)} <span class="dim">{esc(verdict)}</span>'


def _ref(groups: Sequence[Doc], index: object, short: bool = False) -> str:
    """``#N label`` of group ``index`` (``#N`` if ``short``)."""
    if isinstance(index, int) and 0 <= index < len(groups):
        return f"#{index + 1}" + ("" if short else f" {esc(groups[index].get('label'))}")
    return esc(index)


def _plots(groups: Sequence[Doc]) -> str:
    made = [
        ("Throughput", "Samples per second of each group.", plots.throughput_svg(groups)),
        ("Latency", "Latency percentiles (ms) of each group.", plots.latency_svg(groups)),
        ("Accuracy", "mAP (%) of each group.", plots.map_svg(groups)),
    ]
    figures = [
        f'<figure id="plot-{name.lower()}">\n<figcaption><b>{name}</b>. {caption}'
        f"</figcaption>\n{svg}\n</figure>"
        for name, caption, svg in made
        if svg
    ]
    if not figures:
        return '<h2>Plots</h2>\n<p class="dim">No group has a figure to plot.</p>'
    return "<h2>Plots</h2>\n" + "\n".join(figures)


_DIFFERENCES = (
    ("arguments", "Arguments (app options, --with, the harness's thread plan)"),
    ("settings", "Settings (as LoadGen read them back)"),
    ("machine", "Machine"),
)


def _differences(doc: Doc, groups: Sequence[Doc]) -> str:
    parts = []
    for key, name in (d for d in _DIFFERENCES if d[0] in doc):
        differ = _mapping(_mapping(doc.get(key)).get("differ"))
        if not differ:
            parts.append(f'<h3>{name}</h3>\n<p class="dim">The same for every group.</p>')
            continue
        head = "<tr><th></th>" + "".join(f"<th>#{i + 1}</th>" for i in range(len(groups)))
        rows = [
            f'<tr><td><code class="id">{esc(k)}</code></td>'
            + "".join(f"<td>{'—' if v is None else esc(v)}</td>" for v in _listed(values))
            + "</tr>"
            for k, values in sorted(differ.items())
        ]
        parts.append(f"<h3>{name}</h3>\n<table>\n{head}</tr>\n" + "\n".join(rows) + "\n</table>")
    return "<h2>What else differs</h2>\n" + "\n".join(parts)


def _closure(doc: Doc, groups: Sequence[Doc]) -> str:
    diffs = [d for d in _listed(doc.get("closure")) if isinstance(d, Mapping)]
    if not diffs:
        return '<h2>Closure diff</h2>\n<p class="dim">No closure differs from that of the base.</p>'
    parts = ["<h2>Closure diff</h2>"]
    for d in diffs:
        against = f"{_ref(groups, d.get('other'))} against {_ref(groups, d.get('base'))}"
        parts += [f"<h3>{against}</h3>", _closure_lists(d)]
    return "\n".join(parts)


def _closure_lists(d: Doc) -> str:
    items = []
    for e in _entries(d, "version_changed"):
        items.append(
            f"<li><b>{esc(e.get('name'))}</b> {esc(e.get('from'))} → <b>{esc(e.get('to'))}</b>"
            f"{_paths(e.get('from_path'), e.get('to_path'))}</li>"
        )
    for e in _entries(d, "rebuilt"):
        because = "; ".join(str(b) for b in _listed(e.get("because"))) or "an input changed"
        chains = [
            " → ".join(str(n) for n in c) for c in _listed(e.get("chain")) if isinstance(c, list)
        ]
        via = f'<br><span class="dim">via {esc(" | ".join(chains))}</span>' if chains else ""
        items.append(
            f"<li><b>{esc(e.get('name'))}</b> {esc(e.get('version'))} rebuilt, because "
            f"{esc(because)}{via}{_paths(e.get('from_path'), e.get('to_path'))}</li>"
        )
    for key, sign in (("added", "+"), ("removed", "−")):
        for e in _entries(d, key):
            items.append(
                f"<li>{sign} {key} <b>{esc(e.get('name'))}</b> {esc(e.get('version'))}"
                f"{_paths(e.get('path'))}</li>"
            )
    if not items:
        return '<p class="dim">The same closure.</p>'
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def _entries(d: Doc, key: str) -> list[Doc]:
    return [e for e in _listed(d.get(key)) if isinstance(e, Mapping)]


def _paths(*paths: object) -> str:
    shown = [f"<code>{esc(p)}</code>" for p in paths if p]
    return '<br><span class="dim">' + " → ".join(shown) + "</span>" if shown else ""


def _failures(groups: Sequence[Doc]) -> str:
    items = []
    for i, g in enumerate(groups):
        who = f"#{i + 1} {esc(g.get('label'))}"
        for r in _listed(g.get("runs")):
            if isinstance(r, Mapping) and r.get("status") != "ok":
                what = f"run <code>{esc(r.get('id'))}</code> {esc(r.get('status'))}"
                error = r.get("error") or "(no error line recorded)"
                items.append(f'<li class="bad">{who}: {what}<div class="error">{esc(error)}</div>')
        for problem in _listed(g.get("problems")):
            items.append(f'<li class="bad">{who}: a point did not run<div class="error">'
                         f"{esc(problem)}</div>")  # fmt: skip
        pending = g.get("pending")
        if isinstance(pending, int) and pending > 0:
            items.append(f'<li class="pending">{who}: {pending} point(s) pending (not run '
                         "yet; <code>mlpkg sweep --resume</code> runs them)")  # fmt: skip
    if not items:
        return '<h2>Failures</h2>\n<p class="ok">Every run succeeded; nothing is pending.</p>'
    return "<h2>Failures and pending points</h2>\n<ul>\n" + "</li>\n".join(items) + "</li>\n</ul>"


def _reproduce(groups: Sequence[Doc]) -> str:
    rows = [
        _reproduce_row(i, r)
        for i, g in enumerate(groups)
        for r in _listed(g.get("runs"))
        if isinstance(r, Mapping)
    ]
    if not rows:
        return ""
    head = "<tr><th>#</th><th>run</th><th>status</th><th>to reproduce</th></tr>"
    return (
        '<h2>Reproduce</h2>\n<p class="dim">Each run\'s closure is pinned by the lock in its '
        "run directory.</p>\n<table>\n" + head + "\n" + "\n".join(rows) + "\n</table>"
    )


def _reproduce_row(i: int, r: Doc) -> str:
    status = str(r.get("status"))
    command = r.get("command")
    detail = ""
    if isinstance(command, list) and command:
        detail = (
            '<details><summary class="dim">the app\'s command</summary>'
            f"<code>{esc(shlex.join(str(c) for c in command))}</code></details>"
        )
    return (
        f'<tr><td class="n">#{i + 1}</td><td><code class="id">{esc(r.get("id"))}</code>'
        f'</td><td class="{"ok" if status == "ok" else "bad"}">{esc(status)}</td>'
        f"<td><code>{esc(r.get('reproduce') or '—')}</code>{detail}</td></tr>"
    )
