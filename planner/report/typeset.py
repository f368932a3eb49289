"""Typesetting of the review document: the blocks `planner.report.document.document` lays out, written as one
self-contained HTML page and as its Markdown twin. Only typesetting happens here; every number arrives formatted,
so the two files always say the same thing."""

from __future__ import annotations

import base64
import html
import re

def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def to_html(blocks: list, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page: figures as base64 PNG, no external files, scripts or fonts."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows = block
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in headers) if any(headers) else ""
            cells = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table>{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{cells}</tbody></table>")
        elif kind == "figure" and block[1] in figures:
            data = base64.b64encode(figures[block[1]]).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline_html(block[2])}</figcaption></figure>")
    title = html.escape(blocks[0][1])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_destination(path: str) -> str:
    """A link destination CommonMark reads whole: in angle brackets where the path has a space or a parenthesis
    (`--out "my plan.html"`: a bare `my plan_figures/x.png` ends at the space and the image is lost)."""
    if not any(c in path for c in " ()<>"):
        return path
    return "<" + path.replace("<", "%3C").replace(">", "%3E") + ">"


def to_markdown(blocks: list, figure_paths: dict[str, str]) -> str:
    """The Markdown twin: same blocks; figures linked as PNG files written beside it."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            _, headers, rows = block
            headers = [h or " " for h in headers]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure" and block[1] in figure_paths:
            out.append(f"![{block[2]}]({_md_destination(figure_paths[block[1]])})")
    return "\n\n".join(out) + "\n"
