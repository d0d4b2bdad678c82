"""A saved reversible model loads where bwsk is not importable (its own modeling file, `trust_remote_code=True`) and
computes, generates and trains as bwsk's model does; saved configs use the KV cache (use_cache as the config's default).

Every family is saved (by each save path in turn) and loaded in one fresh Python process whose import system refuses
`bwsk`; that process writes what it computed to a file, which the tests compare with bwsk's model here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training.tiny_models import FAMILIES, VOCAB, tiny_model
from transformers import AutoModelForCausalLM

from bwsk.training.reversible import modeling_bwsk_reversible as template
from bwsk.training.reversible.convert import COMBINATION, make_reversible, plain_autograd
from bwsk.training.reversible.huggingface import LAYOUT_FORMAT, BwskReversibleForCausalLM, as_pretrained
from bwsk.training.reversible.remote_code import AUTO_MAP, MODELING_FILE, modeling_source
from bwsk.training.trainer.run_folder import save_model

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

SAVERS = {  # each writes `model` into a new folder `folder`
    "save_pretrained": lambda model, folder: model.save_pretrained(str(folder)),
    "as_pretrained": lambda model, folder: as_pretrained(model).save_pretrained(str(folder)),
    "trainer output": lambda model, folder: folder.mkdir() or save_model(model, folder),
}
NEW_TOKENS = 6

# Run in a fresh interpreter (-I: no cwd, no user site): argv[1] is the root holding inputs.pt and one folder per family.
WITHOUT_BWSK = r"""
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


root = Path(sys.argv[1])
inputs = torch.load(root / "inputs.pt")
results = {"bwsk_imported": None, "refused": None, "families": {}}
try:  # bwsk installed but neither imported nor registered, no trust_remote_code
    AutoModelForCausalLM.from_pretrained(str(root / inputs["families"][0]))
except Exception as error:
    results["refused"] = f"{type(error).__name__}: {error}"
results["bwsk_imported"] = any(name == "bwsk" or name.startswith("bwsk.") for name in sys.modules)


class NoBwsk:
    def find_spec(self, name, path=None, target=None):
        if name == "bwsk" or name.startswith("bwsk."):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, NoBwsk())
try:
    import bwsk  # noqa: F401
    results["blocked"] = False
except ImportError:
    results["blocked"] = True

for family in inputs["families"]:
    model = AutoModelForCausalLM.from_pretrained(str(root / family), trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(inputs["ids"]).logits
    steps = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: steps.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    generated = model.generate(inputs["prompt"], max_new_tokens=inputs["new_tokens"], do_sample=False, pad_token_id=0)
    hook.remove()
    model.train()
    loss = model(input_ids=inputs["ids"], labels=inputs["ids"]).loss
    loss.backward()
    grads = {name: p.grad for name, p in model.model.named_parameters()}
    again = None
    if family == inputs["families"][0]:  # a remote-code model saved again loads again
        model.save_pretrained(str(root / "saved-again"))
        with torch.no_grad():
            again = AutoModelForCausalLM.from_pretrained(str(root / "saved-again"), trust_remote_code=True).eval()(inputs["ids"]).logits
    module = type(model).__module__
    results["families"][family] = dict(
        module=module, logits=logits, generated=generated, steps=steps, loss=loss.detach(), grads=grads, again=again
    )
results["bwsk_imported_after"] = any(name == "bwsk" or name.startswith("bwsk.") for name in sys.modules)
torch.save(results, root / "results.pt")
"""


def _converted(family: str) -> torch.nn.Module:
    """A reversible tiny model (no dropout: the training step is compared) with weights no fresh init could produce,
    its configs saying use_cache=False as training and a config built for training leave them."""
    model = make_reversible(tiny_model(family, dropout=0.0), measure_gap=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.config.use_cache = False
    model.generation_config.use_cache = False
    return model.eval()


def _bwsk_results(model: torch.nn.Module, ids: torch.Tensor, prompt: torch.Tensor) -> dict:
    """Logits (eval, no grad), greedy generation and the gradients of one training step under plain autograd."""
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, use_cache=True)
    model.train()
    with plain_autograd(model):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return dict(logits=logits, generated=generated, loss=loss.detach(), grads=grads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """Every family saved (save paths in turn), bwsk's results for each, and what the process without bwsk computed."""
    root = tmp_path_factory.mktemp("remote-code")
    torch.manual_seed(0)
    ids, prompt = torch.randint(0, VOCAB, (2, 9)), torch.randint(0, VOCAB, (1, 5))
    expected, models = {}, {}
    for i, family in enumerate(FAMILIES):
        model = _converted(family)
        list(SAVERS.values())[i % len(SAVERS)](model, root / family)
        assert model.config.use_cache is False and model.generation_config.use_cache is False  # the live model as it was
        expected[family] = _bwsk_results(model, ids, prompt)
        models[family] = model
    torch.save({"families": list(FAMILIES), "ids": ids, "prompt": prompt, "new_tokens": NEW_TOKENS}, root / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_BWSK, str(root)],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(root=root, ids=ids, expected=expected, models=models, remote=torch.load(root / "results.pt"))


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_the_process_had_no_bwsk(saved):
    remote = saved["remote"]
    assert remote["blocked"] and not remote["bwsk_imported"] and not remote["bwsk_imported_after"]
    for family, got in remote["families"].items():
        assert got["module"].startswith("transformers_modules.") and got["module"].endswith(".modeling_bwsk_reversible"), family


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_remote_code_computes_bwsks_logits(saved):
    for family in FAMILIES:
        got = saved["remote"]["families"][family]
        torch.testing.assert_close(got["logits"], saved["expected"][family]["logits"], rtol=0, atol=1e-6, msg=family)
    first = saved["remote"]["families"][FAMILIES[0]]
    torch.testing.assert_close(first["again"], saved["expected"][FAMILIES[0]]["logits"], rtol=0, atol=1e-6)


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_remote_code_generates_greedily_what_bwsk_does_with_a_kv_cache_by_default(saved):
    prompt_length = 5
    for family in FAMILIES:
        got = saved["remote"]["families"][family]
        assert torch.equal(got["generated"], saved["expected"][family]["generated"]), family
        assert got["steps"] == [prompt_length] + [1] * (NEW_TOKENS - 1), family  # one new token per step: the cache is used


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_remote_code_trains_with_the_gradients_of_bwsks_plain_autograd(saved):
    for family in FAMILIES:
        got, expected = saved["remote"]["families"][family], saved["expected"][family]
        torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-6, atol=0, msg=family)
        assert got["grads"].keys() == expected["grads"].keys(), family
        scale = max(float(grad.abs().max()) for grad in expected["grads"].values())  # a key bias's gradient is rounding noise
        for name, grad in expected["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-6 * scale, msg=f"{family} {name}")


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_without_bwsk_registered_and_without_remote_code_transformers_refuses(saved):
    """transformers' own message (it names the folder and trust_remote_code); the config's `architectures` names bwsk's class."""
    refused = saved["remote"]["refused"]
    folder = saved["root"] / FAMILIES[0]
    assert refused is not None and "trust_remote_code=True" in refused and str(folder) in refused
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BwskReversibleForCausalLM"]


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_every_folder_carries_the_fixed_modeling_file_auto_map_and_use_cache(saved):
    for family in FAMILIES:
        folder = saved["root"] / family
        assert (folder / MODELING_FILE).read_text() == modeling_source(), family
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == AUTO_MAP and config["text_config"]["use_cache"] is True, family
        assert json.loads((folder / "generation_config.json").read_text())["use_cache"] is True, family


def test_the_modeling_file_imports_only_torch_transformers_and_the_standard_library():
    tree = ast.parse(modeling_source())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers"}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_the_modeling_file_builds_bwsks_layout_format_and_refuses_another():
    assert (template.LAYOUT_FORMAT, template.COMBINATION) == (LAYOUT_FORMAT, COMBINATION)
    with pytest.raises(ValueError, match="format 99"):
        template.CouplingStack(tiny_model("llama"), {"format": 99, "combination": COMBINATION, "layers": []})


@pytest.mark.sweep  # one fresh process loads every family without bwsk
def test_with_bwsk_registered_its_own_classes_load_the_folder_with_or_without_remote_code(saved):
    folder = saved["root"] / FAMILIES[0]
    for trust in (False, True):
        loaded = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=trust).eval()
        assert type(loaded) is BwskReversibleForCausalLM, trust
        with torch.no_grad():
            torch.testing.assert_close(loaded(saved["ids"]).logits, saved["expected"][FAMILIES[0]]["logits"], rtol=0, atol=1e-6)
    steps = []
    loaded.register_forward_pre_hook(lambda module, args, kwargs: steps.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    loaded.generate(torch.randint(0, VOCAB, (1, 4)), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert steps == [4, 1, 1]  # the saved config's use_cache: generate uses the KV cache


def test_a_plain_model_saved_by_the_trainer_generates_with_a_kv_cache(tmp_path: Path):
    model = tiny_model("llama")
    model.config.use_cache = False
    model.generation_config.use_cache = False
    save_model(model, tmp_path)
    assert model.config.use_cache is False and model.generation_config.use_cache is False
    assert json.loads((tmp_path / "config.json").read_text())["use_cache"] is True
    assert json.loads((tmp_path / "generation_config.json").read_text())["use_cache"] is True
    assert not (tmp_path / MODELING_FILE).exists()
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    lengths = []
    loaded.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    loaded.generate(torch.randint(0, VOCAB, (1, 4)), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert lengths == [4, 1, 1]
