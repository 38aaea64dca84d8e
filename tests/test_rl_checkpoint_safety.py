"""Resuming never unpickles anything from the run folder: optimiser and RNG state live in
safetensors + JSON, and pickles planted there are ignored or refused with a clear error."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from rationalrewards.rl import safe_state  # noqa: E402
from rationalrewards.rl.config import NFTConfig  # noqa: E402
from rationalrewards.rl.trainer import BrightnessReward, NFTTrainer  # noqa: E402


class _Payload:
    """Unpickling this creates ``marker``: proof that the file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(marker)))


# -- units --------------------------------------------------------------------------------------
def test_optimizer_state_round_trips_exactly_through_safetensors_and_json(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.8, 0.95))
    for _ in range(3):
        p.grad = torch.randn(3, 2)
        opt.step()
    safe_state.save_optimizer_state(opt, tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.AdamW([q], lr=0.5)
    safe_state.load_optimizer_state(opt2, tmp_path)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"] and b["param_groups"][0]["betas"] == (0.8, 0.95)
    assert all(torch.equal(a["state"][0][k], b["state"][0][k]) for k in a["state"][0])


def test_rng_states_round_trip_and_reproduce_the_same_draws(tmp_path):
    import numpy as np

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    safe_state.save_rng_state(tmp_path, rank=0)
    expected = (random.random(), random.gauss(0, 1), float(np.random.rand()), torch.rand(2))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    safe_state.load_rng_state(tmp_path, rank=0)
    again = (random.random(), random.gauss(0, 1), float(np.random.rand()), torch.rand(2))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])
    assert json.loads((tmp_path / "rng-0.json").read_text())["python"]["version"] == 3


# -- a checkpoint from a real (tiny) run ---------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from rationalrewards.testing.tiny_pipelines import build_tiny_flux_cached

    folder = tmp_path_factory.mktemp("ckpt")
    model = str(build_tiny_flux_cached(os.environ.get("RATIONALREWARDS_CACHE")))
    (folder / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["a cat", "a dog"]))
    cfg = NFTConfig(pretrained_model=model, train_data=str(folder / "train.jsonl"), output_dir=str(folder / "run"),
                    resolution=16, num_inference_steps=2, sampler="euler", max_sequence_length=16, group_size=2,
                    groups_per_step=2, sample_batch_size=4, train_batch_size=4, timesteps_per_sample=1, lora_rank=2,
                    lora_alpha=4, max_steps=1, eval_every=0, save_every=1, reward_kind="brightness",
                    report_to=["jsonl"], resume="never")
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as trainer:
        trainer.train()
    return {"cfg": cfg, "dir": Path(cfg.output_dir) / "checkpoints" / "step-000001"}


def _resume(cfg: NFTConfig, ckpt: Path) -> NFTTrainer:
    trainer = NFTTrainer(cfg.replace(resume=str(ckpt), max_steps=1), reward=BrightnessReward(), verbose=False)
    trainer.load_checkpoint(ckpt)
    return trainer


def test_a_checkpoint_holds_no_pickle(checkpoint):
    names = sorted(p.name for p in checkpoint["dir"].iterdir())
    assert names == ["adapters.safetensors", "optimizer.json", "optimizer.safetensors", "rng-0.json",
                     "rng-0.safetensors", "state.json"]


def test_pickles_planted_beside_a_checkpoint_are_never_unpickled(checkpoint, tmp_path):
    ckpt = tmp_path / "step-000001"
    shutil.copytree(checkpoint["dir"], ckpt)
    marker = tmp_path / "PWNED"
    for name in ("optimizer.pt", "rng-0.pt", "state.pt", "adapters.pt"):
        plant_pickle(ckpt / name, marker)
    trainer = _resume(checkpoint["cfg"], ckpt)
    trainer.close()
    assert trainer.state.step == 1
    assert not marker.exists()


def test_a_checkpoint_with_only_legacy_pickles_is_refused_with_a_clear_error(checkpoint, tmp_path):
    ckpt = tmp_path / "step-000001"
    shutil.copytree(checkpoint["dir"], ckpt)
    marker = tmp_path / "PWNED"
    for name in ("optimizer.safetensors", "optimizer.json", "rng-0.json", "rng-0.safetensors"):
        (ckpt / name).unlink()
    plant_pickle(ckpt / "optimizer.pt", marker)
    plant_pickle(ckpt / "rng-0.pt", marker)
    with pytest.raises(safe_state.UnsafeCheckpointError, match=r"optimizer\.pt.*refusing to unpickle"):
        _resume(checkpoint["cfg"], ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["optimizer.safetensors", "rng-0.safetensors", "adapters.safetensors"])
def test_a_pickle_disguised_as_a_safetensors_file_is_refused(checkpoint, tmp_path, name):
    ckpt = tmp_path / "step-000001"
    shutil.copytree(checkpoint["dir"], ckpt)
    marker = tmp_path / "PWNED"
    plant_pickle(ckpt / name, marker)
    with pytest.raises(safe_state.UnsafeCheckpointError, match=rf"{name} is not a valid safetensors file"):
        _resume(checkpoint["cfg"], ckpt)
    assert not marker.exists()
