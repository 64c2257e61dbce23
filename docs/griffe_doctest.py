"""Griffe extension for the API reference: numbarnn's docstrings as Markdown.

numbarnn's docstrings are written for ``help()`` and pytest's doctest: bare ``>>>``
examples, Sphinx roles (``:func:`clip```) and reST ``::`` markers. Rendered as Markdown,
``>>>`` would become nested block quotes and ``[...]`` in an example's output a broken
cross-reference. Before the docstrings are parsed this extension

* wraps every run of doctest lines (a ``>>>`` line and what follows up to a blank line)
  in a ``pycon`` code fence, dropping ``# doctest:`` flags;
* turns ``:role:`~a.b.name``` into ``name`` in a code span;
* turns a paragraph-ending ``::`` into ``:``.

The docstrings themselves stay as they are (pytest runs their examples).
"""
from __future__ import annotations

import re

from griffe import Extension

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_FLAG = re.compile(r"\s*#\s*doctest:.*$")


def to_markdown(text: str) -> str:
    """The Markdown form of one docstring (see the module docstring)."""
    lines = text.splitlines()
    out, i = [], 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and stripped.startswith(">>>"):
            indent = line[:len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(_FLAG.sub("", lines[i]))
                i += 1
            out.append(f"{indent}```")
            continue
        if not in_fence:
            line = _ROLE.sub(lambda m: "`" + m.group(1).split(".")[-1] + "`", line)
            if line.endswith("::") and (i + 1 == len(lines) or not lines[i + 1].strip()):
                line = line[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestBlocks(Extension):
    """Rewrite each object's docstring with :func:`to_markdown` when it is loaded."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
