"""The jinja2 template of report.html: contents with anchors, the summary first, long tables folded, inline CSS.

Autoescaping is on: every name, caption and cell is HTML-escaped; only `Markup` built by `reports.render` (code
spans of the report's own text, figure data URIs) goes in as is.
"""

STYLE = """
:root { --text: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --better: #1a7f37; --worse: #cf222e; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--text); line-height: 1.45;
       max-width: 68rem; margin: 0 auto; padding: 1rem 1.25rem 4rem; font-size: 15px; }
h1 { margin: 0.5rem 0 0.25rem; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; margin-top: 2.2rem; }
a { color: #0969da; } code { background: var(--head); padding: 0 0.2em; border-radius: 3px; font-size: 0.9em; }
.meta, .caption, figcaption, .note { color: var(--muted); font-size: 0.88rem; }
nav.toc { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 1rem; }
nav.toc ol { margin: 0.2rem 0; padding-left: 1.4rem; } nav.toc li { margin: 0.1rem 0; }
nav.toc ol ol { font-size: 0.85rem; columns: 2; column-gap: 2rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.3rem 0 1rem; font-size: 0.84rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 0.2rem 0.45rem; text-align: right; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.text, th.text { text-align: left; }
table.summary td { min-width: 5.5rem; } table.summary td.model { min-width: 0; font-weight: 600; }
table.summary th { font-size: 0.8rem; }
.value { font-size: 1rem; font-weight: 600; display: block; }
.ci { color: var(--muted); font-size: 0.75rem; white-space: nowrap; display: block; }
.change { font-size: 0.75rem; display: block; }
.better { color: var(--better); } .worse { color: var(--worse); } .unresolved, .untested { color: var(--muted); }
.direction { font-weight: 400; color: var(--muted); font-size: 0.75rem; display: block; }
details { margin: 0.3rem 0 1rem; } summary { cursor: pointer; color: #0969da; }
figure { margin: 1rem 0 1.5rem; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.legend { font-size: 0.85rem; }
@media print { details { display: block; } nav.toc { display: none; } }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<header id="top">
<h1>{{ title }}</h1>
<p class="meta">{{ subtitle }}</p>
</header>
<section id="summary">
<h2>Summary</h2>
{% if summary.rows %}
<p class="caption">{{ summary.caption }}</p>
<div class="scroll"><table class="summary">
<thead><tr><th class="text">model</th>{% for column in summary.columns %}<th>{{ column.label }}<span class="direction">{{ column.direction }}</span></th>{% endfor %}</tr></thead>
<tbody>
{% for row in summary.rows %}<tr><td class="text model">{{ row.model }}</td>{% for cell in row.cells %}<td>{% if cell %}<span class="value">{{ cell.value }}</span>{% if cell.ci %} <span class="ci">{{ cell.ci }}</span>{% endif %}<span class="change {{ cell.verdict }}" title="{{ cell.title }}">{{ cell.change }}</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
<p class="legend">{{ summary.legend }}</p>
{% else %}<p>{{ summary.caption }}</p>{% endif %}
</section>

<nav class="toc" aria-label="Contents">
<strong>Contents</strong>
<ol>
<li><a href="#summary">Summary</a> (above)</li>
{% for section in sections %}<li><a href="#{{ section.anchor }}">{{ section.title }}</a>
{% if section.entries %}<ol>{% for entry in section.entries %}<li><a href="#{{ entry.anchor }}">{{ entry.title }}</a></li>{% endfor %}</ol>{% endif %}
</li>
{% endfor %}</ol>
</nav>


{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block.kind == "text" %}<p>{{ block.html }}</p>
{% elif block.kind == "figure" %}<figure id="{{ block.anchor }}"><img alt="{{ block.caption }}" src="{{ block.src }}"><figcaption>{{ block.caption }}{% if block.files %} Files: {% for file in block.files %}<a href="{{ file }}">{{ file }}</a>{% if not loop.last %}, {% endif %}{% endfor %}.{% endif %}</figcaption></figure>
{% elif block.kind == "table" %}
{% if block.folded %}<details id="{{ block.anchor }}"><summary>{{ block.caption }} ({{ block.rows|length }} rows: show)</summary>
{% else %}<div id="{{ block.anchor }}"><p class="caption">{{ block.caption }}</p>{% endif %}
<div class="scroll"><table>
<thead><tr>{% for column in block.columns %}<th class="{{ column.align }}">{{ column.name }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in block.rows %}<tr>{% for cell, column in zip(row, block.columns) %}<td class="{{ column.align }}">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
{% if block.csv %}<p class="note">As CSV: <a href="{{ block.csv }}">{{ block.csv }}</a>{% if block.tex %}, LaTeX: <a href="{{ block.tex }}">{{ block.tex }}</a>{% endif %}.</p>{% endif %}
{% if block.folded %}</details>{% else %}</div>{% endif %}
{% endif %}
{% endfor %}
<p class="note"><a href="#top">back to top</a></p>
</section>
{% endfor %}
</body>
</html>
"""
