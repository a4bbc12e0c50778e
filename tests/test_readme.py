"""Every code block of the README runs as written: the Python blocks as scripts, and every ``ma2ml`` command
of the shell blocks through the CLI. Real trainings run on the tiniest settings (a few images, a fraction of
an epoch, two or four evaluations); what needs a GPU, a Ray cluster or data from the internet is parsed
(so its options are checked) but not run."""

from __future__ import annotations

import importlib
import pathlib
import re
import shlex
import sys

import pytest

import ma2ml_env
from tests.conftest import LCBENCH

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)
SHELL = re.findall(r"```bash\n(.*?)```", TEXT, flags=re.DOTALL)
#: the module example (registering `reg`), saved as my_automl.py for the CLI's --plugin line
MODULE_EXAMPLE = next(b for b in PYTHON if "register_module" in b and "check_module" in b)
TINY = {"max_train": 64, "epoch_scale": 0.02}  # real training on 64 images for 2% of the epochs


def _commands(block: str) -> list[list[str]]:
    """The ``ma2ml ...`` commands of a shell block (continuation lines joined, ``&&`` chains split,
    comments dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0].endswith("ma2ml"):
                out.append(words[1:])
    return out


COMMANDS = [cmd for block in SHELL for cmd in _commands(block)]
#: commands that need what the test machine has not: a GPU, a Ray cluster, downloaded data
_EXTERNAL = ("--device", "--backend", "--data-root", "--ray-address")


def _tiny(argv: list[str]) -> list[str]:
    """The same command on the tiniest settings: at most 4 evaluations in batches of 2, tiny trainings."""
    out, it = [], iter(argv)
    for a in it:
        if a in ("--budget", "--batch-size"):
            next(it)
            out += [a, "4" if a == "--budget" else "2"]
        elif a == "--tensorboard":
            out += [a, next(it)]
        else:
            out.append(a)
    if "--curves-folder" in out:  # the README's folder is the user's; the tests read the shared copy
        out[out.index("--curves-folder") + 1] = str(LCBENCH)
    if out[0] == "search":
        if "--benchmark" not in out and "--learning-curves" not in out and "surrogate" not in out:
            out += ["--max-train", str(TINY["max_train"]), "--epoch-scale", str(TINY["epoch_scale"])]
        out.append("--no-progress")
    return out


def _out_of(argv: list[str]) -> str | None:
    return argv[argv.index("--out") + 1] if "--out" in argv else None


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A scratch working folder; modules the examples register are unregistered afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(ma2ml_env.registered_modules())
    yield tmp_path
    for name in set(ma2ml_env.registered_modules()) - before:
        ma2ml_env.unregister_module(name)
    for name in [m for m in sys.modules if m.startswith(("readme_example_", "my_automl"))]:
        del sys.modules[name]


def _tiny_training(monkeypatch):
    """Real training, the tiniest settings: every TrainEvaluator / train_final the examples build."""
    from ma2ml_env.rewards import train

    real_init, real_final = train.TrainEvaluator.__init__, train.train_final

    def init(self, *a, **kw):
        real_init(self, *a, **{**kw, **TINY, "device": "cpu"})

    def final(*a, **kw):
        return real_final(*a, **{**kw, "epoch_scale": TINY["epoch_scale"], "device": "cpu"})

    monkeypatch.setattr(train.TrainEvaluator, "__init__", init)
    monkeypatch.setattr(train, "train_final", final)


def _trains(text: str) -> bool:
    return "surrogate" not in text and "benchmark" not in text and "learning-curves" not in text


_SLOW = pytest.mark.slow  # real trainings (tiny, but seconds each)


@pytest.mark.parametrize("index", [pytest.param(i, marks=[_SLOW] if 'reward="train"' in b and "run(" in b else [])
                                   for i, b in enumerate(PYTHON)])
def test_readme_python_block(index, sandbox, monkeypatch, one_torch_thread):
    _tiny_training(monkeypatch)
    # run it as an importable module, as a user's script would be (classes must pickle)
    (sandbox / f"readme_example_{index}.py").write_text(PYTHON[index])
    importlib.import_module(f"readme_example_{index}")


@pytest.mark.parametrize("index", [
    pytest.param(i, marks=[_SLOW] if _trains(" ".join(c)) and not any(a in c for a in _EXTERNAL) else [],
                 id=" ".join(c[:3])) for i, c in enumerate(COMMANDS)])
def test_readme_ma2ml_command(index, sandbox, capsys, one_torch_thread):
    from agents.cli import build_parser, load_plugin, main, plugins_in

    argv = COMMANDS[index]
    (sandbox / "my_automl.py").write_text(MODULE_EXAMPLE)
    for spec in plugins_in(argv):
        load_plugin(spec)
    build_parser().parse_args(argv)  # every option exists and every value is valid
    if any(a in argv for a in _EXTERNAL):
        return  # needs a GPU, a cluster or downloaded data: parsed only
    # a command that reads a run (train, report, --resume) first gets the earlier README search that made it
    reads = {a for a in argv[1:] if not a.startswith("-")} if argv[0] in ("train", "report") else \
        ({_out_of(argv)} if "--resume" in argv else set())
    for earlier in COMMANDS[:index]:
        if earlier[0] == "search" and "--resume" not in earlier and _out_of(earlier) in reads:
            assert main(_tiny(earlier)) == 0
    code = main(_tiny(argv))
    assert code == 0, capsys.readouterr().err


def test_readme_shell_blocks_name_only_existing_benchmark_scripts_and_presets():
    from benchmarks.suite import PRESETS

    for block in SHELL:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["python"] and words[1].startswith("benchmarks/"):
                assert (ROOT / words[1]).is_file(), words[1]
                if "--preset" in words:
                    assert words[words.index("--preset") + 1] in PRESETS


def test_readme_has_the_module_example_and_the_two_first_screen_commands():
    assert "class Regularise" in MODULE_EXAMPLE
    first = TEXT[:TEXT.index("---")]
    assert first.count("```bash") == 2 and "pytest" in first and "ma2ml search" in first
