"""The docs harness itself: markers, output matching, and parse checks that catch drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import MarkerError, commands, console_steps, page_blocks, split_argv
from tests.docs.execute import DocsTestError, Session, matches
from tests.docs.parse import check_argv, check_usage

PAGE = """# A page

<!-- docs-test: run -->
```bash
printf 'a\\nb\\n' | wc -l   # a pipe: run by bash
```

<!-- docs-test: output -->
```
2
```

<!-- docs-test: file notes/a.txt -->
```text
hello
```

<!-- docs-test: run -->
```python
print(open("notes/a.txt").read().strip(), 6 * 7)
```

<!-- docs-test: output -->
```
hello 42
```

<!-- docs-test: skip needs Beaker -->
```bash
helios launch beaker --name x --gpus 1 -- helios eval run --protocol knn
```

```yaml
not: a command, so no marker needed
```
"""


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_markers_are_read_and_checked(tmp_path):
    blocks = page_blocks(_page(tmp_path, PAGE), tmp_path)
    assert [(b.kind, b.lang) for b in blocks] == [
        ("run", "bash"),
        ("output", ""),
        ("file", "text"),
        ("run", "python"),
        ("output", ""),
        ("skip", "bash"),
        (None, "yaml"),
    ]
    assert blocks[5].arg == "needs Beaker" and not blocks[6].needs_marker
    for bad, message in (
        ("<!-- docs-test: sometimes -->\n```bash\nls\n```\n", "unknown docs-test kind"),
        ("<!-- docs-test: skip -->\n```bash\nls\n```\n", "needs a reason"),
        ("<!-- docs-test: run -->\ntext\n```bash\nls\n```\n", "right before a fence"),
        ("<!-- docs-test: output -->\n```\nx\n```\n", "must follow a run"),
    ):
        with pytest.raises(MarkerError, match=message):
            page_blocks(_page(tmp_path, bad), tmp_path)
    unmarked = page_blocks(_page(tmp_path, "```\n$ helios data inspect x\n```\n"), tmp_path)
    assert unmarked[0].needs_marker and unmarked[0].kind is None


def test_a_page_runs_in_order_and_outputs_are_compared(tmp_path):
    blocks = page_blocks(_page(tmp_path, PAGE), tmp_path)
    session = Session(tmp_path)
    for block in blocks[:5]:
        session.run(block)
    assert session.last_output.strip() == "hello 42"
    wrong = blocks[4].__class__(**{**blocks[4].__dict__, "text": "hello 43\n"})
    with pytest.raises(DocsTestError, match="output differs"):
        session.run(wrong)


def test_ellipsis_matching():
    assert matches("samples  392\n...\ntotal ...", "samples 392\nmore\nlines\ntotal 54 MB")
    assert not matches("samples 392", "samples 391")
    assert matches("a\n...\nb", "a\nb") and matches("a\n...\nb", "a\nx\ny\nb\n")
    assert not matches("a\nb", "a\nc\nb")
    assert matches('{\n  "acc": 0.85...,\n  ...\n}', '{\n "acc": 0.8500001,\n "f1": 2\n}')


def test_command_splitting():
    text = "helios a \\\n    --b c   # comment\n# only a comment\n\nmake x\n"
    assert commands(text) == ["helios a      --b c   # comment", "make x"]
    assert split_argv("helios a --b 'c d'  # note") == ["helios", "a", "--b", "c d"]
    assert split_argv("cat x | head") is None and split_argv("echo $HOME") is None
    steps = console_steps("$ helios x \\\n  --y\nout 1\nout 2\n$ ls\n")
    assert [(s.command, s.expected) for s in steps] == [
        ("helios x --y", "out 1\nout 2"),
        ("ls", ""),
    ]


def test_parse_checks_catch_renamed_flags_and_commands(tmp_path):
    assert check_argv(["helios", "data", "inspect", "x", "--max-samples", "5"], tmp_path) == []
    assert check_argv(["helios", "data", "inspect", "x", "--max-sample", "5"], tmp_path)
    assert check_argv(["helios", "data", "inspects", "x"], tmp_path)
    launch = ["helios", "launch", "beaker", "--name", "n", "--", "helios", "eval", "run"]
    assert check_argv([*launch, "--protocol", "knn"], tmp_path) == []
    assert check_argv([*launch, "--protocols", "knn"], tmp_path)
    assert check_argv(["python", "bench/nope.py"], tmp_path) == ["no such script bench/nope.py"]
    assert check_usage(["helios", "run", "predict", "P", "[--scratch", "DIR]"]) == []
    assert check_usage(["helios", "run", "predict", "P", "[--scratchy", "DIR]"])
