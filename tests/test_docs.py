"""The README and docs/ point at files that exist: every relative Markdown
link, and the files the code rewrites or checks (the demo results, the
released-model table) hold what that code looks for."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                              if f.endswith(".md"))


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", f.read())
    here = os.path.dirname(os.path.join(ROOT, doc))
    missing = [t for t in targets if "://" not in t and not os.path.exists(os.path.join(here, t))]
    assert missing == []


def test_the_readme_first_screen_serves_a_newcomer():
    """What it is, the demo's picture, the two commands, three released-model
    commands and the layout, before anything else."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    order = [text.index(s) for s in ("Fully Convolutional Networks", "docs/demo-predictions.png",
                                     "`make demo`", "`make test`", "python -m surgery download",
                                     "python -m solvers.infer voc-fcn8s published",
                                     "make eval-published-voc-fcn8s", "## Layout")]
    assert order == sorted(order) and order[-1] < 5000


def test_the_demo_results_live_in_docs_demo():
    from demo.robustness import README_BEGIN, README_END, RESULTS_DOC
    with open(RESULTS_DOC, encoding="utf-8") as f:
        text = f.read()
    assert README_BEGIN in text and README_END in text
    assert RESULTS_DOC == os.path.join(ROOT, "docs", "demo.md")
