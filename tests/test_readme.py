"""The README's Python examples run as written."""

import importlib
import pathlib
import re

import pytest

import ma2ml_env

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    cheap = ('reward="surrogate"', "reward='surrogate'", "benchmark_env(")  # surrogate or tabular: no training
    if not any(c in code for c in cheap):
        pytest.skip("example runs real training; covered by the training tests")
    before = set(ma2ml_env.registered_modules())
    try:
        # run it as an importable module, as a user's script would be (classes must pickle)
        (tmp_path / f"readme_example_{index}.py").write_text(code)
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.import_module(f"readme_example_{index}")
    finally:
        for name in set(ma2ml_env.registered_modules()) - before:
            ma2ml_env.unregister_module(name)


def test_readme_has_the_module_example():
    assert any("register_module" in b and "check_module" in b for b in BLOCKS)
