"""The documentation site: every tutorial runs and makes its pictures, the listings printed
by the code are current, and ``mkdocs build --strict`` passes.

The tutorials (``docs/tutorials/NN-*.md``) and the other pages with runnable code
(``docs/index.md``, ``docs/concepts.md``) are executed in this process, block by block, by
``docs/run_tutorials.py``, with ``NUMBARNN_DOCS_QUICK=1`` (tiny training) and a scratch
working directory; the two slowest in a child process of their own, in the background
(``PAGE_RUNS``). Pictures are never committed: the pages write them, and the site built
here shows the ones this run made.
"""
import importlib.metadata
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest

import checkout

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"numbarnn_docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


runner = _load("run_tutorials")
TUTORIALS = runner.tutorials()
# plugins.md's examples import a tutorial's plugin package; gpu.md's need a GPU (or the simulator)
PAGES = TUTORIALS + [DOCS / name for name in ("index.md", "concepts.md", "training.md", "trainers.md", "kernels.md")]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")  # the background pages' tests run at the session's end (conftest.py)
def made_pictures(tmp_path_factory):
    """Pictures the tutorial runs made, by file name; the site build uses them."""
    folder = tmp_path_factory.mktemp("pictures")
    return folder


@pytest.fixture
def isolated(monkeypatch):
    """A page may change global state (sys.path, the plugin registry, NumPy's global seed,
    the environment); undo it all afterwards."""
    from numbarnn import plugins

    saved_path, saved_modules = list(sys.path), set(sys.modules)
    saved_env, saved_random = dict(os.environ), np.random.get_state()
    saved_in_process = set(plugins._in_process)
    yield
    for name in set(plugins._in_process) - saved_in_process:
        plugins.unregister_plugin(name)
    sys.path[:] = saved_path
    # Forget the packages a page wrote to a temporary folder, never the environment's own
    # libraries or this checkout (both may live under /tmp too, as in a CI clone: unloading
    # half of matplotlib made its classes fail isinstance checks in the next page).
    keep = tuple(os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, ROOT))
    for name in set(sys.modules) - saved_modules:
        module = sys.modules.get(name)
        file = os.path.realpath(str(getattr(module, "__file__", "") or "")) if getattr(module, "__file__", None) else ""
        if (file.startswith(os.path.realpath(os.sep + "tmp") + os.sep) and not file.startswith(keep)
                and not name.startswith("numbarnn_loops_")):  # numbarnn's compiled-loop modules stay
            del sys.modules[name]
    importlib.invalidate_caches()
    os.environ.clear()
    os.environ.update(saved_env)
    np.random.set_state(saved_random)
    plugins.reset()


def _page_imports(page):
    """Top-level modules that the code a page runs (its run blocks and the .py files it writes) imports,
    less the standard library, numbarnn and the modules the page writes itself."""
    import ast

    blocks = runner.blocks(page)
    code = [b.code for b in blocks if b.kind == "run" or (b.kind == "file" and b.title.endswith(".py"))]
    written = {part.removesuffix(".py") for b in blocks if b.kind == "file" for part in Path(b.title).parts}
    modules = set()
    for text in code:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.partition(".")[0])
    return modules - set(sys.stdlib_module_names) - written - {"numbarnn"}


def _needs(page):
    """The optional packages a page's code needs: those it imports, and numbarnn.datasets' own."""
    imports = _page_imports(page)
    needs = [m for m in ("matplotlib", "torch") if m in imports]
    if "datasets." in "".join(b.code for b in runner.blocks(page) if b.kind == "run"):
        needs += ["sklearn", "statsmodels"]  # numbarnn.datasets reads data shipped in these (the [datasets] extra)
    return needs


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return len(data), width, height


def _page_in_background(stem):
    """The page run in a child process (``docs/run_tutorials.py --quick``, the same run as
    :func:`runner.run` here, its pictures copied to a folder of their own, the process's
    ``pictures``), as a BackgroundRuns: the root conftest.py starts it at collection and
    moves its test to the end. Nothing starts where the page's packages are missing (its
    test skips)."""
    page = DOCS / "tutorials" / f"{stem}.md"

    def launch():
        if any(importlib.util.find_spec(module) is None for module in _needs(page)):
            return []
        pictures = Path(tempfile.mkdtemp(prefix=f"numbarnn-{stem}-"))
        process = subprocess.Popen([sys.executable, str(DOCS / "run_tutorials.py"), "--quick", "--out", str(pictures),
                                    stem], cwd=ROOT, env=checkout.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        process.pictures = pictures
        return [process]
    return checkout.BackgroundRuns(launch)


# The slowest pages (in CI 03 took about 35 s, most of it compiling the two cells it
# defines, and 02 about 10 s) run on the core the rest of the suite leaves idle.
PAGE_RUNS = {stem: _page_in_background(stem) for stem in ("02-dinosaur-island", "03-cell-plugin")}


def _pictures_made_in_background(page) -> Path:
    runs = PAGE_RUNS[page.stem]
    try:
        (process,) = runs.start()  # started at collection (or now, when this test runs alone)
        output = process.communicate(timeout=1500)[0]
    finally:
        runs.stop()
    assert process.returncode == 0, output[-6000:]
    return process.pictures


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_runs_and_makes_its_pictures(page, tmp_path, isolated, made_pictures):
    for module in _needs(page):
        pytest.importorskip(module, reason=f"{page.name} needs {module}")
    if page.stem in PAGE_RUNS:
        folder = _pictures_made_in_background(page)
    else:
        runner.run(page, tmp_path, quick=True)
        folder = tmp_path / "img"
    for name in runner.pictures(page):
        made = folder / name
        assert made.exists(), f"{page.name} shows img/{name} but its code did not write it"
        size, width, height = _png_size(made)
        assert size > 5000 and width >= 300 and height >= 200, (name, size, width, height)
        shutil.copyfile(made, made_pictures / name)
    if page.stem in PAGE_RUNS:
        shutil.rmtree(folder)


def test_every_tutorial_has_code_and_every_picture_has_a_page():
    shown = set()
    for page in TUTORIALS:
        assert any(b.kind == "run" for b in runner.blocks(page)), f"{page.name} runs no code"
        shown.update(runner.pictures(page))
    assert shown, "no tutorial shows a picture"
    for page in DOCS.rglob("*.md"):
        if page.parent != DOCS / "tutorials":
            assert "img/" not in "".join(runner.pictures(page)), f"{page}: pictures belong to tutorials"


def test_block_classification(tmp_path):
    page = tmp_path / "99-example.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n```python title=\"pkg/mod.py\"\nY = 2\n```\n\n"
        "```python\n# not run: needs a GPU\nboom()\n```\n\n```bash\nls\n```\n\n"
        "??? note \"hidden\"\n    ```python\n    x += 1\n    ```\n\n![a picture](img/99-a.png)\n")
    kinds = [(b.kind, b.title, b.line) for b in runner.blocks(page)]
    assert kinds == [("run", None, 4), ("file", "pkg/mod.py", 8), ("show", None, 12),
                     ("show", None, 17), ("run", None, 22)]
    assert runner.pictures(page) == ["99-a.png"]
    namespace = runner.run(page, tmp_path / "work")
    assert namespace["x"] == 2 and (tmp_path / "work" / "pkg" / "mod.py").read_text() == "Y = 2\n"


def test_a_failing_block_points_at_its_line(tmp_path):
    page = tmp_path / "98-broken.md"
    page.write_text("# broken\n\n```python\nx = 1\ny = undefined_name\n```\n")
    with pytest.raises(NameError) as info:
        runner.run(page, tmp_path / "work")
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(info.value.__traceback__)]
    assert (str(page.resolve()), 5) in frames, frames


def test_generated_listings_match_the_code():
    """``numbarnn list ...``, ``numbarnn plugins``, the hook signatures and the CLI help in
    the docs are what the code prints now (``python docs/gen_listings.py`` regenerates them)."""
    result = subprocess.run([sys.executable, str(DOCS / "gen_listings.py"), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_generated_regions_cover_every_kind_and_hook():
    text = (DOCS / "registry.md").read_text(encoding="utf-8")
    for region in ("list-cells", "list-losses", "list-optimizers", "list-samplers", "plugins", "hooks"):
        assert f"<!-- BEGIN generated: {region} -->" in text, region
    for hook in ("register_cells(register)", "register_losses(register)", "register_optimizers(register)",
                 "register_samplers(register)"):
        assert f"`{hook}`" in text, hook


def test_readme_links_to_the_docs_and_every_tutorial():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/index.md" in readme or "mkdocs" in readme, "README should link to the documentation site"
    missing = [p.name for p in TUTORIALS if f"docs/tutorials/{p.name}" not in readme]
    assert not missing, f"README does not link to {missing}"


def test_site_builds_strictly(tmp_path, made_pictures):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed (pip install '.[docs]'): the site build is not checked")
    shown = {name for page in TUTORIALS for name in runner.pictures(page)}
    if shown - {p.name for p in made_pictures.iterdir()} and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("the tutorials' pictures need matplotlib (pip install '.[plot]')")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(DOCS, project / "docs", ignore=shutil.ignore_patterns("img", "__pycache__"))
    (project / "numbarnn").symlink_to(ROOT / "numbarnn", target_is_directory=True)  # for mkdocstrings
    img = project / "docs" / "tutorials" / "img"
    img.mkdir()
    for picture in made_pictures.iterdir():
        shutil.copyfile(picture, img / picture.name)
    for page in TUTORIALS:  # the hook's record that these pictures come from the current code
        if runner.pictures(page) and all((img / name).exists() for name in runner.pictures(page)):
            runner._stamp(page, img).write_text(runner.code_hash(page) + " quick\n", encoding="utf-8")
    # A picture this run did not make (its page was skipped or deselected) is made by the
    # site's hook, at the small sizes.
    assert not runner.missing_pictures(TUTORIALS, img) or len(list(made_pictures.iterdir())) < len(shown)
    # CI (.ci/run) builds the site once more, in an environment with only the [docs] extra,
    # from these pictures: a folder named in NUMBARNN_DOCS_PICTURES receives them, with their stamps.
    if os.environ.get("NUMBARNN_DOCS_PICTURES"):
        shutil.copytree(img, os.environ["NUMBARNN_DOCS_PICTURES"], dirs_exist_ok=True)
    env = checkout.env(NUMBARNN_DOCS_QUICK="1", NO_MKDOCS_2_WARNING="1")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(project / "mkdocs.yml"),
                             "-d", str(site)], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    page = (site / "tutorials" / "02-dinosaur-island" / "index.html").read_text(encoding="utf-8")
    assert "img/02-gates-heatmap.png" in page
    assert (site / "tutorials" / "img" / "02-gates-heatmap.png").exists()
    api = (site / "api" / "trainer" / "index.html").read_text(encoding="utf-8")
    assert "make_trainer" in api and "train_step" in api
    assert not list(site.rglob("*.py")), "tooling .py files leaked into the site"


def _distribution_closure(names):
    """The distributions ``names`` install, with what they require (their extras' requirements not)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [canonicalize_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own requirements are unknown, the name still counts
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_the_docs_extra_installs_what_the_pages_with_pictures_import():
    """``pip install ".[docs]" && mkdocs build --strict`` runs the pages whose pictures are
    missing (``docs/hooks.py``), so what they import must come with numbarnn and its [docs]
    extra. CI builds that environment's site from the pictures this run made (the tutorials
    do not run twice), so this is the check that catches a plotting dependency missing from
    the extra."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(text).name for text in project["dependencies"] + project["optional-dependencies"]["docs"]]
    installed = _distribution_closure(wanted)
    providers = importlib.metadata.packages_distributions()
    pages = [page for page in TUTORIALS if runner.pictures(page)]
    assert pages, "no tutorial shows a picture"
    for page in pages:
        imports = _page_imports(page) | set(_needs(page))  # _needs adds numbarnn.datasets' own
        assert "matplotlib" in imports, f"{page.name} shows pictures: it should import matplotlib"
        for module in sorted(imports):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            assert dists & installed, (f"{page.name} imports {module} (from {sorted(dists) or 'nothing installed'}), "
                                       f"which numbarnn[docs] does not install")


def test_docstrings_become_markdown_for_the_api_reference():
    pytest.importorskip("griffe", reason="griffe (mkdocstrings) is not installed: pip install '.[docs]'")
    griffe_doctest = _load("griffe_doctest")
    text = ("Run :func:`~numbarnn.course.clip` like this::\n\n"
            "    >>> clip(g, 5)  # doctest: +SKIP\n    [1, 2]\n\nDone.")
    assert griffe_doctest.to_markdown(text) == (
        "Run `clip` like this:\n\n    ```pycon\n    >>> clip(g, 5)\n    [1, 2]\n    ```\n\nDone.")
