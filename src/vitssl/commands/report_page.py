"""The HTML page of `vitssl report`: one self-contained file, figures inline as base64 PNG."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitssl.commands.report import Report


def render_html(report: Report) -> str:
    """The page as one HTML string (images inline as base64 PNG, styles inline)."""
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE).render(
        r=report, title=report.run_dir.name,
        generated=dt.datetime.now().isoformat(timespec="seconds"))


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vitssl report: {{ title }}</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
 h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
 table { border-collapse: collapse; margin: .5em 0 1em; }
 td, th { border: 1px solid #ddd; padding: .25em .7em; text-align: left; font-size: .92em; }
 figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
 figcaption { color: #555; font-size: .9em; }
 pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .85em; }
 .note { color: #8a5a00; }
</style>
</head>
<body>
<h1>vitssl report: {{ title }}</h1>
<p>{{ r.run_dir }} &middot; generated {{ generated }}</p>
{% macro figures(items) %}{% for f in items %}
<figure><img class="figure" alt="{{ f.title }}" src="data:image/png;base64,{{ f.data }}">
<figcaption>{{ f.title }}: {{ f.caption }}</figcaption></figure>
{% endfor %}{% endmacro %}
{% if r.summary %}
<h2>Summary</h2>
<table>
{% for k, v in r.summary.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if r.notes %}
<ul>{% for n in r.notes %}<li class="note">{{ n }}</li>{% endfor %}</ul>
{% endif %}
{% if r.curves %}
<h2>Training curves</h2>
{{ figures(r.curves) }}
{% endif %}
{% if r.learning_series %}
<h2>Learning curves</h2>
{{ figures(r.learning) }}
{% for s in r.learning_series %}
<h3>{{ s.title }} <code>{{ s.key }}</code></h3>
{% if s.missing %}<p class="note">{{ s.key }}: {{ s.missing }}</p>
{% else %}<table><tr><th>step</th><th>{{ s.key }}</th></tr>
{% for step, value in s.table() %}<tr><td>{{ step }}</td><td>{{ value }}</td></tr>{% endfor %}</table>
{% endif %}
{% endfor %}
{% endif %}
{% if r.results %}
<h2>Evaluation results</h2>
{% for name, rows in r.results %}
<h3>{{ name }}</h3>
<table>{% for k, v in rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% endfor %}
{% endif %}
{% if r.attention %}
<h2>Attention maps</h2>
{{ figures(r.attention) }}
{% endif %}
{% if r.correspondence %}
<h2>Region correspondence</h2>
{{ figures(r.correspondence) }}
{% endif %}
<h2>Resolved config</h2>
<pre>{{ r.config_text or "(no config.yaml)" }}</pre>
</body>
</html>
"""
