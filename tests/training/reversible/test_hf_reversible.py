"""A saved reversible model loads with the Auto classes (no remote code) and computes, trains and generates as it did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training.tiny_models import FAMILIES, tiny_model
from transformers import AutoModelForCausalLM

from bwsk.training.distributed import WholeState
from bwsk.training.reversible.convert import make_reversible, reversible_runtime
from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.huggingface import (
    MODEL_TYPE,
    BwskReversibleForCausalLM,
    as_pretrained,
    layout_from_json,
    layout_to_json,
    saved_config,
)
from bwsk.training.trainer.checkpoint import Checkpoint, save_checkpoint
from bwsk.training.trainer.run_folder import save_model

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out


def _converted(family: str, seed: int = 0) -> torch.nn.Module:
    model = make_reversible(tiny_model(family, seed=seed), measure_gap=False)
    with torch.no_grad():  # weights no fresh init could produce: the loaded model must carry these
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


def _save(model: torch.nn.Module, folder: Path) -> Path:
    as_pretrained(model).save_pretrained(str(folder))
    return folder


def _checkpoint(model: torch.nn.Module, root: Path) -> Path:
    """A trainer checkpoint of `model` (weights under the converted model's own names, tied tensors once); its folder."""
    optimizer = torch.optim.AdamW(model.parameters())
    whole = WholeState(model, optimizer, None)
    state = Checkpoint(whole.weights(), optimizer.state_dict(), {}, {})
    return save_checkpoint(root, 1, state, model_config=saved_config(model))


def _trainer_output(model: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir()
    save_model(model, folder)
    return folder


SAVERS = {  # each writes `model` under the folder it is given and returns the folder to load
    "save_pretrained": lambda model, folder: model.save_pretrained(str(folder)) or folder,
    "as_pretrained": lambda model, folder: as_pretrained(model).save_pretrained(str(folder)) or folder,
    "trainer output": _trainer_output,
    "checkpoint": _checkpoint,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_way_of_saving_reloads_the_same_function(tmp_path: Path, family: str):
    """`save_pretrained` of the converted model itself, `as_pretrained`, the trainer's output folder and a checkpoint all
    write the reversible type; each reloads with AutoModelForCausalLM to the same logits (1e-6)."""
    model = _converted(family)
    ids = torch.randint(0, 128, (3, 11))
    with torch.no_grad():
        expected = model(ids).logits
    for how, save in SAVERS.items():
        folder = save(model, tmp_path / how.replace(" ", "-"))
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == MODEL_TYPE, how  # the modeling file and auto_map: test_remote_code.py
        loaded = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        assert isinstance(loaded, BwskReversibleForCausalLM), how
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=1e-6, msg=how)
        assert reversible_runtime(loaded.model).report.layers == reversible_runtime(model).report.layers


def test_a_converted_model_saved_with_a_state_dict_writes_it_under_the_wrappers_prefix(tmp_path: Path):
    model = _converted("llama")
    state = {name: tensor + 1.0 for name, tensor in model.state_dict().items()}
    model.save_pretrained(str(tmp_path), state_dict=state)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_reloaded_reversible_model_trains_with_the_same_gradients(tmp_path: Path):
    model = _converted("neox-sequential").train()
    loaded = AutoModelForCausalLM.from_pretrained(str(_save(model, tmp_path / "model"))).train()
    ids = torch.randint(0, 128, (2, 9))
    model(ids, labels=ids).loss.backward()
    loaded(input_ids=ids, labels=ids).loss.backward()
    expected = dict(model.named_parameters())
    for name, parameter in loaded.model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name].grad, rtol=1e-5, atol=1e-7)


def test_reloaded_reversible_model_generates_what_the_saved_one_did(tmp_path: Path):
    model = _converted("neox-parallel", seed=3)
    loaded = AutoModelForCausalLM.from_pretrained(str(_save(model, tmp_path / "model")))
    prompt = torch.randint(0, 128, (1, 5))
    options = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    generated = loaded.generate(prompt, **options)
    assert generated.shape == (1, 11)
    assert torch.equal(generated, model.generate(prompt, **options))


@pytest.mark.sweep
def test_a_new_process_loads_it_after_bwsk_register(tmp_path: Path):
    folder = _save(_converted("neox-parallel"), tmp_path / "model")
    script = (
        "import sys, bwsk\n"
        "bwsk.register()\n"
        "from transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "print(type(model).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "BwskReversibleForCausalLM"


def test_layout_round_trips_and_a_foreign_layout_is_refused(tmp_path: Path):
    model = _converted("llama")
    container, layers = layout_from_json(layout_to_json(model))
    report = reversible_runtime(model).report
    assert (container, tuple(layers)) == (report.container, report.layers)
    folder = _save(model, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["coupling"]["format"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="format 99"):
        AutoModelForCausalLM.from_pretrained(str(folder))


def test_other_modes_save_as_their_own_architecture():
    model = tiny_model("neox-parallel")
    assert as_pretrained(model) is model
