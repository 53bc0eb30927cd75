"""A griffe extension for the API site (mkdocs.yml): Keras' example layout.

Our docstrings follow Keras': the doctest after `Example:` starts at the
section's own indentation,

    Example:

    >>> model.compile(optimizer="adam")

whereas Google style, which griffe parses, wants a section's body indented
under its title. Without this, griffe sees an empty "Example" section and
renders the doctest as prose (a `[0.5, 1.0]` output then reads as a Markdown
link). The extension indents the lines after such a title, up to the next
Google section title or the end of the docstring, before griffe parses the
docstring; the source (and so the doctests) stays as it is.
"""

import re

import griffe

_EXAMPLE_TITLE = re.compile(r"(Examples?):\s*$")
# A Google section title at the left margin, e.g. "Returns:" or "Raises:".
_SECTION_TITLE = re.compile(
    r"(Args|Arguments|Parameters|Returns|Yields|Raises|Warns|Attributes|"
    r"Notes?|Examples?|References|See Also|Warnings?):\s*$"
)


def indent_examples(text):
    """Indents the body of each `Example:` section of `text` whose first line
    is not indented (Keras' layout); indented sections stay as they are."""
    lines = text.split("\n")
    indent = False
    for i, line in enumerate(lines):
        if not line.startswith((" ", "\t")) and _SECTION_TITLE.match(line):
            body = [rest for rest in lines[i + 1:] if rest.strip()]
            indent = bool(_EXAMPLE_TITLE.match(line) and body
                          and not body[0].startswith((" ", "\t")))
        elif indent and line.strip():
            lines[i] = "    " + line
    return "\n".join(lines)


class KerasExamples(griffe.Extension):
    """Indents Keras-style `Example:` sections before griffe parses them."""

    def on_instance(self, *, obj, **kwargs):
        docstring = obj.docstring
        if docstring is not None:
            docstring.value = indent_examples(docstring.value)
