"""reST-flavoured docstrings to the Markdown that mkdocstrings renders (used by the docs build only).

adaptlib's docstrings are Google style (``Args:``, ``Returns:``, ...) with a few reST
constructs inside; this module rewrites those constructs, nothing else:

* ``.. math::`` blocks -> ``$$ ... $$`` blocks and ``:math:`x``` -> ``$x$`` (both rendered by
  ``pymdownx.arithmatex`` in generic mode, then KaTeX in the browser);
* ``:func:`~a.b```, ``:class:``, ``:mod:``, ``:data:``, ``:attr:``, ``:meth:`` ... ->
  inline code (``b`` for a leading ``~``, the full name otherwise);
* a paragraph ending in ``::`` followed by an indented block -> the paragraph (``:``) and a
  fenced ``python`` code block (``Example::`` with ``>>>`` lines included).

``RstToMarkdown`` is the griffe extension (``mkdocs.yml``: ``extensions:
[scripts/docs_rst.py:RstToMarkdown]``) that applies :func:`convert` to every docstring
griffe loads; the docs hook applies it to the class docstrings of the generated method pages.
"""
from __future__ import annotations

import re
from typing import List, Tuple

_ROLE = re.compile(r":(?:py:)?(func|class|mod|data|attr|meth|obj|exc|const|ref):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _role(m: "re.Match[str]") -> str:
    tilde, target = m.group(2), m.group(3)
    if "<" in target and target.endswith(">"):  # :ref:`text <target>`
        target = target.split("<")[0].strip()
    if tilde:
        target = target.split(".")[-1]
    return f"`{target}`"


def _inline(line: str) -> str:
    # Math first: its content must not be touched by the other rules.
    parts = re.split(r"(:math:`[^`]+`)", line)
    out = []
    for p in parts:
        m = _MATH_ROLE.fullmatch(p)
        if m:
            out.append("$" + " ".join(m.group(1).split()) + "$")
        else:
            out.append(_ROLE.sub(_role, p))
    return "".join(out)


def _block(lines: List[str], i: int, base: int) -> int:
    """Index after the indented block that starts after line ``i`` (lines indented > ``base``)."""
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
        j += 1
    while j > i + 1 and not lines[j - 1].strip():
        j -= 1
    return j


def convert(text: str) -> str:
    """The Markdown of a reST-flavoured docstring (see the module docstring)."""
    lines = text.splitlines()
    chunks: List[Tuple[bool, List[str]]] = []  # (verbatim, lines): roles are converted outside verbatim

    def emit(verbatim: bool, new: List[str]) -> None:
        if chunks and chunks[-1][0] == verbatim:
            chunks[-1][1].extend(new)
        else:
            chunks.append((verbatim, list(new)))

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        ind = " " * _indent(line)
        if stripped.startswith(".. math::"):
            end = _block(lines, i, _indent(line))
            first = stripped[len(".. math::"):].strip()
            body = ([first] if first else []) + [ln.strip() for ln in lines[i + 1:end] if ln.strip()]
            emit(True, ["", f"{ind}$$", *[f"{ind}{b}" for b in body], f"{ind}$$", ""])
            i = end
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            end = _block(lines, i, _indent(line))
            body = lines[i + 1:end]
            while body and not body[0].strip():
                body = body[1:]
            if body:
                head = stripped[:-2].rstrip()
                if head in ("Example", "Examples"):
                    emit(False, [f"{ind}**{head}**"])  # not "Example:": no Google section
                elif head:
                    emit(False, [ind + head + ":"])
                sub = min(_indent(b) for b in body if b.strip())
                emit(True, ["", f"{ind}```python", *[f"{ind}{b[sub:]}" if b.strip() else "" for b in body],
                            f"{ind}```", ""])
                i = end
                continue
        emit(False, [line])
        i += 1
    return "\n".join(_inline("\n".join(ls)) if not verbatim else "\n".join(ls) for verbatim, ls in chunks)


try:  # the griffe extension (only when griffe is installed: the docs extra)
    import griffe

    class RstToMarkdown(griffe.Extension):
        """Griffe extension: :func:`convert` every docstring as it is loaded."""

        def on_instance(self, *, obj: "griffe.Object", **kwargs: object) -> None:  # griffe >= 1.0
            if obj.docstring is None and obj.is_attribute:
                text = _comment_doc(obj)
                if text:
                    obj.docstring = griffe.Docstring(text, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value)

    def _comment_doc(obj: "griffe.Object") -> str:
        """The ``#:`` comment lines right above an attribute (Sphinx's attribute docs)."""
        try:
            lines = obj.lines_collection[obj.filepath]
        except Exception:  # noqa: BLE001 - no source: no comment
            return ""
        i = (obj.lineno or 0) - 2
        out: List[str] = []
        while i >= 0 and lines[i].strip().startswith("#:"):
            out.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        return "\n".join(out)

except ImportError:  # pragma: no cover
    pass
