"""rq-dashboard's own templates, patched as they load so that no stored text can become markup or script.

rq-dashboard 0.9 renders job descriptions, metadata, tracebacks, call strings and worker and queue
names with underscore's raw `<%= %>`, so a province named `<img src=x onerror=...>` (text from the
upstream, written into job descriptions and meta) becomes an element of the page. The escaping is
done here, where the text meets HTML, rather than in the JSON the pages load: the stored data and
the JSON API keep the exact names (an export must equal the upstream), and underscore's `<%- %>`
escapes for both element text and quoted attributes, which covers every place the templates use.

Each patch names the text it expects; a template that no longer matches (another rq-dashboard
version) fails the app at start instead of silently serving an unpatched page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import rq_dashboard
from jinja2 import BaseLoader, Environment, FileSystemLoader, TemplateNotFound

PREFIX = "rq_dashboard/"
_TEMPLATES = Path(rq_dashboard.__file__).parent / "templates"
_JS_TEMPLATE = re.compile(r'(<script name="[\w-]+" type="text/template">)(.*?)(</script>)', re.S)
# jobs.html escaped two values by hand with jQuery; once every `<%-` escapes, that would escape twice.
_HAND_ESCAPED = re.compile(r"\$\('<div/>'\)\.text\(([\w.]+)\)\.html\(\)")


class PatchError(RuntimeError):
    """Raised when an rq-dashboard template no longer holds the text a patch rewrites."""


def _escape_js_templates(source: str) -> tuple[str, int]:
    """Every underscore interpolation inside the page's `text/template` blocks becomes an escaping one."""
    count = 0

    def block(match: re.Match[str]) -> str:
        nonlocal count
        body, n = re.subn(r"<%=", "<%-", match.group(2))
        body, m = _HAND_ESCAPED.subn(r"\1", body)
        count += n + m
        return match.group(1) + body + match.group(3)

    return _JS_TEMPLATE.sub(block, source), count


def _literal(old: str, new: str) -> Callable[[str], tuple[str, int]]:
    def patch(source: str) -> tuple[str, int]:
        return source.replace(old, new), source.count(old)

    patch.__name__ = f"replace {old!r}"
    return patch


# template -> patches, each returning (new source, how many places it changed; 0 means it no longer fits).
_PATCHES: dict[str, tuple[Callable[[str], tuple[str, int]], ...]] = {
    # The one inline script (settings and the page's code) runs by the per-response CSP nonce.
    "base.html": (
        _literal('<script type="text/javascript">', '<script nonce="{{ csp_nonce }}" type="text/javascript">'),
    ),
    "job.html": (_escape_js_templates,),
    "jobs.html": (_escape_js_templates,),
    "queues.html": (_escape_js_templates,),
    "workers.html": (_escape_js_templates,),
    # The .js includes are not autoescaped (by their extension): a queue name inside a JS string
    # literal must be JSON-encoded, not pasted.
    "scripts/jobs.js": (_literal("'{{ queue.name }}'", "{{ queue.name|tojson }}"),),
}


def patched_source(name: str, source: str) -> str:
    for patch in _PATCHES.get(name, ()):
        source, changed = patch(source)
        if not changed:
            raise PatchError(f"rq-dashboard template {name} no longer fits refreshq's patch ({patch.__name__})")
    return source


class DashboardTemplates(BaseLoader):
    """Serves `rq_dashboard/...` templates from the installed package with refreshq's patches applied."""

    def __init__(self) -> None:
        self._files = FileSystemLoader(str(_TEMPLATES))

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if not template.startswith(PREFIX):
            raise TemplateNotFound(template)
        source, filename, uptodate = self._files.get_source(environment, template)
        return patched_source(template.removeprefix(PREFIX), source), filename, uptodate

    def check(self, environment: Environment) -> None:
        """Apply every patch once, so that a template that no longer fits fails at start."""
        for name in _PATCHES:
            self.get_source(environment, PREFIX + name)
