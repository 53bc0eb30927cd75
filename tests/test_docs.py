"""Every code block of the README and of the site (docs/) runs or is checked.

- ```python blocks: a page's blocks run in order in one namespace, in a
  temporary working directory, as a reader pasting them would run them. The
  README's ten lines are left to `tests/test_readme.py` (slow), which runs
  them already.
- ```bash blocks: each command is checked against the project: `make
  <target>` names a Makefile target, `pip install "keras_mtl[<extras>]"`
  names extras of pyproject.toml, `keras-mtl <command>` a command of the CLI,
  `python <file>` a file of the repository. A block that cannot be checked
  (docker, curl, a cluster) says so just above it with
  `<!-- not run: <why> -->`; any other command fails the test, so no block is
  skipped silently.
- `mkdocs build --strict` builds the site without a warning (slow; CI also
  runs `make docs`).
"""

import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# Pages whose blocks take more than a few seconds (they train several models
# or run a search): `make test-slow` runs them. The others, about 15 s in all,
# run in `make test`.
SLOW_PAGES = {
    "docs/architectures.md",
    "docs/backbones.md",
    "docs/data.md",
    "docs/reliability.md",
    "docs/serving.md",
    "docs/tuning.md",
    "docs/weighting.md",
}

FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", flags=re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->\s*$")


def _name(page):
    return page.relative_to(ROOT).as_posix()


def _blocks(page, language):
    """`(code, text before it)` of each block of `language` on `page`."""
    text = page.read_text(encoding="utf-8")
    return [(m.group(2), text[:m.start()]) for m in FENCE.finditer(text)
            if m.group(1) == language]


def _python_blocks(page):
    blocks = [textwrap.dedent(code) for code, _ in _blocks(page, "python")]
    if page == README:
        # The ten lines: tests/test_readme.py runs them (and tools/check_wheel.py).
        ten_lines = next(b for b in blocks if "build_model" in b)
        blocks.remove(ten_lines)
    return blocks


def _page_params():
    return [
        pytest.param(page, id=_name(page),
                     marks=[pytest.mark.slow] if _name(page) in SLOW_PAGES else [])
        for page in PAGES if _python_blocks(page)
    ]


@pytest.fixture
def clean_keras():
    from keras_mtl import weighting

    registered = set(weighting.names())
    yield
    # A page may set a mixed-precision policy or register a weighting method;
    # later tests expect float32 and the package's own methods.
    keras.config.set_dtype_policy("float32")
    for name in set(weighting.names()) - registered:
        weighting.unregister(name, missing_ok=True)
    # No `keras.backend.clear_session()`: it costs 2-3 s a page, and pages
    # share nothing but Keras' global state, reset above.


@pytest.mark.parametrize("page", _page_params())
def test_python_blocks_run(page, tmp_path, monkeypatch, clean_keras):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for i, code in enumerate(_python_blocks(page)):
        exec(compile(code, f"{_name(page)}, python block {i + 1}", "exec"), namespace)


def test_slow_pages_exist_and_have_python_blocks():
    names = {_name(page): page for page in PAGES}
    assert SLOW_PAGES <= set(names), sorted(SLOW_PAGES - set(names))
    assert all(_python_blocks(names[name]) for name in SLOW_PAGES)


def test_every_fenced_block_has_a_known_language():
    # `text` is output or a diagram, not code; anything else must be python
    # (run) or bash (checked or marked), so that nothing escapes both tests.
    for page in PAGES:
        for m in FENCE.finditer(page.read_text(encoding="utf-8")):
            assert m.group(1) in ("python", "bash", "text"), (_name(page), m.group(0)[:80])


def _make_targets():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


def _extras():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def _cli_commands():
    from keras_mtl import cli

    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    return set(subparsers.choices)


def _commands(code):
    """The commands of a bash block: comments dropped, continuations joined."""
    code = re.sub(r"\\\n", " ", code)
    for line in code.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            yield shlex.split(line)


def _check_command(words, targets, extras, commands):
    """An error message, or None when `words` is a command we can check."""
    if words[0] == "make":
        unknown = [w for w in words[1:] if not w.startswith("-") and w not in targets]
        return f"no Makefile target {unknown}" if unknown else None
    if words[:2] == ["pip", "install"]:
        for word in words[2:]:
            m = re.fullmatch(r"keras_mtl\[([\w,-]+)\]", word)
            if m:
                unknown = set(m.group(1).split(",")) - extras
                return f"no extra {sorted(unknown)} in pyproject.toml" if unknown else None
        return "a pip install of something other than keras_mtl[...]"
    if words[0] == "keras-mtl":
        return None if words[1] in commands else f"no keras-mtl command {words[1]!r}"
    if words[0] == "python" and words[1].endswith(".py"):
        return None if (ROOT / words[1]).is_file() else f"no file {words[1]}"
    return "a command this test cannot check"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_bash_blocks_are_checked_or_marked(page):
    targets, extras, commands = _make_targets(), _extras(), _cli_commands()
    for code, before in _blocks(page, "bash"):
        if NOT_RUN.search(before):
            continue
        for words in _commands(code):
            problem = _check_command(words, targets, extras, commands)
            assert problem is None, (
                f"{_name(page)}: `{shlex.join(words)}`: {problem}; mark the block "
                "with `<!-- not run: <why> -->` if it cannot be checked")


def test_the_checks_catch_mistakes():
    targets, extras, commands = _make_targets(), _extras(), _cli_commands()
    assert {"test", "docs", "demo"} <= targets and "dev" in extras and "demo" in commands
    for line in ("make tests", 'pip install "keras_mtl[tensorflw]"', "keras-mtl serve",
                 "python examples/nothing.py", "docker run tensorflow/serving"):
        (words,) = _commands(line)
        assert _check_command(words, targets, extras, commands) is not None, line


@pytest.mark.slow
def test_site_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "weighting" / "index.html").is_file()


def test_the_readmes_links_lead_to_files():
    # mkdocs checks the site's own links; the README's are checked here.
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the site's pages"
    missing = [link for link in local if not (ROOT / link).is_file()]
    assert not missing, missing
