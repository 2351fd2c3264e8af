"""report.html parses, holds every table and every figure inline, and every footnote mark resolves."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from rowfactory import NO_GPU, make_row, write_rows

from energybench.report.build import write_report


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.headings: list[str] = []
        self._text: list[str] | None = None
        self.unclosed_errors = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables.append({"class": a.get("class"), "caption": "", "rows": 0})
        if tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("a", "link", "script"):
            self.links.append(a.get("href") or a.get("src") or "")
        if tag in ("h1", "h2", "caption"):
            self._text = []
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "caption") and self._text is not None:
            text = "".join(self._text)
            if tag == "caption":
                self.tables[-1]["caption"] = text
            else:
                self.headings.append(text)
            self._text = None
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.unclosed_errors += 1

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def test_html_page_is_self_contained_and_holds_every_table_figure_and_footnote(tmp_path):
    rows = [make_row(m, t, s, backbone=bb, score=50.0 + s,
                     train={"gpu_energy_kwh": None, "wall_s": 5.0 + s}, accounting={"mem_model_bytes": 1000 + s})
            for bb in ("tiny-t5", "t5-small") for m in ("full_ft", "lora") for t in ("a", "b") for s in (0, 1)]
    rows.append(make_row("lora", "a", 3, status="failed", error="boom <script>"))
    write_report([write_rows(tmp_path, rows)], tmp_path, formats=("html",))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    p = PageParser()
    p.feed(page)
    p.close()
    assert p.unclosed_errors == 0 and not p.stack
    assert "Backbone: tiny-t5" in p.headings and "Backbone: t5-small" in p.headings
    captions = [t["caption"] for t in p.tables if t["class"] == "report-table"]
    assert sum("Quality (READ Table 1)" in c for c in captions) == 2
    assert sum("Efficiency (READ Table 3)" in c for c in captions) == 2
    assert all(t["rows"] == 3 for t in p.tables if t["class"] == "report-table")  # header + 2 methods
    assert any(t["class"] == "failed" for t in p.tables) and "boom &lt;script&gt;" in page
    # figures: quality vs cost and memory per backbone, inline PNGs only
    assert len(p.images) == 4
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # the only links are footnote anchors, and each resolves to a note on the page
    assert p.links and all(href.startswith("#note-") for href in p.links)
    assert all(href[1:] in p.ids for href in p.links)
    assert NO_GPU in page and "not drawn" in page  # READ-vs-counter figure skipped, with the reason
