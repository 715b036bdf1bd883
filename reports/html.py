"""One self-contained HTML report page: tables, figures (embedded PNG), sanity flags, provenance.

The page needs no other file and no network: images are base64 data URIs and the style is inline,
so it can be mailed, attached to a review or archived next to the results.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
     color:#222;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem;display:block;overflow-x:auto}
caption{caption-side:top;text-align:left;font-size:.8rem;color:#555;padding-bottom:.3rem}
th,td{padding:.25rem .55rem;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #999} td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}
img{max-width:100%;height:auto;margin:.5rem 0}
.flags li{margin:.2rem 0} .ok{color:#1a7f37} .warn{color:#b35900}
.meta td{text-align:left;white-space:normal}
"""


@dataclass
class Section:
    """A titled block of the page: pre-rendered HTML (tables) and/or PNG figures."""

    title: str
    html: str = ""
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    """(caption, PNG bytes) pairs."""


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def flags_html(flags: Sequence[str]) -> str:
    """The sanity flags as a list; an explicit line when there are none."""
    if not flags:
        return '<p class="ok">No sanity flags: no critic-free attack beat a critic attack, no return rose with ε.</p>'
    items = "".join(f"<li>{escape(f)}</li>" for f in flags)
    return f'<ul class="flags warn">{items}</ul>'


def meta_html(manifest: dict | None) -> str:
    """A compact provenance table from a bench manifest (suite, versions, git, machine, timings)."""
    if not manifest:
        return "<p>No manifest.json found next to the results.</p>"
    suite = manifest.get("suite", {})
    git = manifest.get("git") or {}
    machine = manifest.get("machine", {})
    timings = manifest.get("timings", {})
    rows = [
        ("suite", f"{suite.get('name')} ({suite.get('source') or 'no file'})"),
        ("policies", ", ".join(p.get("name", "?") for p in manifest.get("policies", []))),
        ("attacks / eps", f"{', '.join(suite.get('attacks', []))} / {', '.join(map(str, suite.get('eps', [])))}"),
        ("episodes x eval seeds", f"{suite.get('episodes')} x {suite.get('eval_seeds')}"),
        ("critic / PGD", f"{suite.get('critic')} / {suite.get('pgd_steps')} steps, {suite.get('pgd_restarts')} restart(s)"),
        ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())),
        ("git", f"{git.get('commit', 'n/a')}{' (dirty)' if git.get('dirty') else ''}"),
        ("machine", f"{machine.get('cpu', '')}, {machine.get('usable_cores')} cores, {machine.get('platform', '')}"),
        ("wall time", f"{timings.get('wall_s', 'n/a')} s (critic fitting {timings.get('critic_fit_s', 'n/a')} s)"),
        ("status", str(manifest.get("status"))),
    ]
    body = "".join(f"<tr><td><b>{escape(k)}</b></td><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def render_html(title: str, sections: Sequence[Section], *, flags: Sequence[str] = (),
                manifests: Sequence[tuple[str, dict | None]] = (), note: str | None = None) -> str:
    """The whole report page as one string: `manifests` holds (input, bench manifest or None) for each
    pooled input; `note` is a warning shown under the title."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>",
             f"<p>Generated {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} by rbrl report.</p>",
             f'<p class="warn"><b>{escape(note)}</b></p>' if note else "",
             "<h2>Sanity flags</h2>", flags_html(flags)]
    for sec in sections:
        parts.append(f"<h2>{escape(sec.title)}</h2>")
        parts.append(sec.html)
        for caption, png in sec.figures:
            parts.append(f"<figure>{img_tag(png, caption)}<figcaption>{escape(caption)}</figcaption></figure>")
    parts.append("<h2>Provenance</h2>")
    for src, manifest in manifests:
        if len(manifests) > 1:
            parts.append(f"<h3>{escape(src)}</h3>")
        parts.append(meta_html(manifest))
    parts.append("</body></html>")
    return "\n".join(parts)
