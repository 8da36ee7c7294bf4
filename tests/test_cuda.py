"""GPU options (bf16, channels_last, torch.compile) and CUDA runs against the CPU.

The CPU tests check that channels_last and compile leave checkpoints as they are (same keys, loadable
without either). Compiling takes minutes on a CPU (and tens of seconds with dynamo's "eager" backend on 2
busy cores), so there the trainers' compile call is only recorded, and `accelerate` is checked on networks
compiled but never run; the compiled training runs are CUDA tests, skipped without a GPU.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from degrader.checkpoint import DEGRADER_FILE, Degrader
from degrader.device import accelerate
from degrader.gan import LossConfig
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.nets import Discriminator
from degrader.run import STATE_FILE
from degrader.train import FitConfig, fit, plan_fit
from sr.model import PRESETS, SR_FILE, load_sr_generator
from sr.train import SRTrainConfig, plan_train, train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY_SR = dict(width=8, blocks=(1, 1, 1), residual=True, d_width=8)


@pytest.fixture(autouse=True)
def tiny_sr_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY_SR)


@pytest.fixture
def compile_calls(monkeypatch) -> list[str]:
    """Records which networks a trainer compiles, without compiling them (minutes on a CPU)."""
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: compiled.append(type(self).__name__))
    return compiled


def fit_config(folders: tuple[Path, Path], out: Path, **kw) -> FitConfig:
    hr, lr = folders
    base = dict(hr_size=32, steps=2, batch_size=2, workers=0, log_every=1, device="cpu", loss=LossConfig(d_steps=1))
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), **{**base, **kw})


def sr_config(hr: Path, out: Path, **kw) -> SRTrainConfig:
    base = dict(degrader="bicubic", hr=str(hr), preset="tiny", steps=2, batch_size=4, loss=LossConfig(d_steps=1))
    base.update(device="cpu", workers=0, sample_every=100, checkpoint_every=100, log_every=1)
    return SRTrainConfig(out=str(out), **{**base, **kw})


def keys(path: Path) -> list[str]:
    return sorted(load_file(path))


def assert_same_checkpoint_keys(a: Path, b: Path, files: tuple[str, ...]) -> None:
    for name in files:
        ka = keys(a / name)
        assert ka == keys(b / name)
        assert not [k for k in ka if "_orig_mod" in k]


# ------------------------------------------------------------------------------------------------ CPU


def test_compiled_networks_keep_their_state_dict_keys(tmp_path):
    net = HighToLowGenerator(HighToLowConfig(hr_size=32, z_dim=8, width=8, blocks_per_group=1))
    plain_keys = sorted(net.state_dict())
    assert any("_orig_mod." in k for k in torch.compile(net).state_dict())  # what a compile wrapper would save
    for network in (net, Discriminator(net.config.discriminator())):
        keys_before = sorted(network.state_dict())
        assert accelerate(network, SimpleNamespace(channels_last=True, compile=True)) is network
        assert network._compiled_call_impl is not None  # compiled in place, on first call
        assert sorted(network.state_dict()) == keys_before
    Degrader(net).save(tmp_path / DEGRADER_FILE)
    assert keys(tmp_path / DEGRADER_FILE) == sorted(f"net_g.{k}" for k in plain_keys)
    assert Degrader.load(tmp_path).net_g.head.weight.is_contiguous()  # loads as a plain network


def test_channels_last_and_compile_keep_fit_checkpoints(tiny_folders, tmp_path, compile_calls):
    plain = fit(plan_fit(fit_config(tiny_folders, tmp_path / "plain"))).out
    fast = fit(plan_fit(fit_config(tiny_folders, tmp_path / "fast", channels_last=True, compile=True))).out
    assert len(compile_calls) == 2 and compile_calls[1] == "Discriminator"  # the preset's generator, then D
    assert_same_checkpoint_keys(plain, fast, (DEGRADER_FILE, STATE_FILE))
    a, b = Degrader.load(plain), Degrader.load(fast)  # loads into a plain, uncompiled network
    hr = torch.rand(2, 3, 32, 32)
    # channels_last changes the order of float sums only: the same run up to rounding.
    torch.testing.assert_close(a.degrade(hr, [1, 2]), b.degrade(hr, [1, 2]), atol=1e-4, rtol=0)


def test_channels_last_and_compile_keep_sr_checkpoints(tiny_folders, tmp_path, compile_calls):
    hr, _ = tiny_folders
    plain = train(plan_train(sr_config(hr, tmp_path / "plain"))).out
    fast = train(plan_train(sr_config(hr, tmp_path / "fast", channels_last=True, compile=True))).out
    assert len(compile_calls) == 2 and compile_calls[1] == "Discriminator"
    assert_same_checkpoint_keys(plain, fast, (SR_FILE, STATE_FILE))
    net, _ = load_sr_generator(fast)
    assert next(net.parameters()).is_contiguous()


def test_resume_may_switch_channels_last_and_cache(tiny_folders, tmp_path):
    out = tmp_path / "run"
    fit(plan_fit(fit_config(tiny_folders, out, steps=1, cache_mb=0)))
    result = fit(plan_fit(fit_config(tiny_folders, out, steps=2, resume=True, channels_last=True, cache_mb=1)))
    assert result.step == 2


def test_cli_takes_the_gpu_and_cache_options(tiny_folders, tmp_path):
    from cli.degrade import degrade
    from cli.sr import sr

    hr, lr = tiny_folders
    fast = ["--set=channels_last=true", "--set=compile=true", "--set=bf16=true", "--set=cache_mb=8", "--dry-run"]
    r = CliRunner().invoke(degrade, ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "f"), *fast])
    assert r.exit_code == 0, r.output
    args = ["train", "--degrader", "bicubic", "--hr", str(hr), "--out", str(tmp_path / "s"), *fast]
    r = CliRunner().invoke(sr, args)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(degrade, ["fit", "--hr", str(hr), "--lr", str(lr), "--out", "x", "--set", "cache_mb=-1"])
    assert r.exit_code != 0 and "cache_mb" in r.output


# ------------------------------------------------------------------------------------------------ CUDA


@cuda
def test_fit_on_cuda_with_bf16_and_channels_last(tiny_folders, tmp_path):
    cpu = fit(plan_fit(fit_config(tiny_folders, tmp_path / "cpu"))).out
    result = fit(plan_fit(fit_config(tiny_folders, tmp_path / "gpu", device="cuda", bf16=True, channels_last=True)))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.logs.values())
    assert_same_checkpoint_keys(cpu, result.out, (DEGRADER_FILE, STATE_FILE))
    assert Degrader.load(result.out).degrade(torch.rand(1, 3, 32, 32), [0]).shape == (1, 3, 8, 8)


@cuda
def test_fit_on_cuda_compiled(tiny_folders, tmp_path):
    # 64 px HR: the 16 px LR needs no JPEG padding (replicate padding's backward fails under compile, torch 2.14)
    cpu = fit(plan_fit(fit_config(tiny_folders, tmp_path / "cpu", hr_size=64))).out
    config = fit_config(
        tiny_folders, tmp_path / "gpu", hr_size=64, device="cuda", bf16=True, channels_last=True, compile=True
    )
    result = fit(plan_fit(config))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.logs.values())
    assert_same_checkpoint_keys(cpu, result.out, (DEGRADER_FILE, STATE_FILE))


@cuda
def test_sr_train_on_cuda(tiny_folders, tmp_path):
    hr, _ = tiny_folders
    result = train(plan_train(sr_config(hr, tmp_path / "gpu", device="cuda", bf16=True, channels_last=True)))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.logs.values())
    net, _ = load_sr_generator(result.out)
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


@pytest.fixture
def learned_degrader(tmp_path) -> Path:
    """An untrained degrader whose output depends on its noise (a nonzero tail), saved as `fit` would."""
    torch.manual_seed(0)
    net = HighToLowGenerator(HighToLowConfig(hr_size=32, z_dim=8, width=8, blocks_per_group=1, residual=True))
    torch.nn.init.normal_(net.tail.conv.weight, std=0.05)
    Degrader(net).save(tmp_path / DEGRADER_FILE)
    return tmp_path / DEGRADER_FILE


@cuda
def test_degrade_on_cuda_matches_cpu(learned_degrader):
    hr, seeds = torch.rand(8, 3, 32, 32), list(range(8))
    on_cpu = Degrader.load(learned_degrader).degrade(hr, seeds)
    on_gpu = Degrader.load(learned_degrader, "cuda").degrade(hr, seeds).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=5e-3, rtol=0)  # TF32 convolutions round more coarsely


@cuda
def test_export_on_cuda_matches_cpu(tiny_folders, learned_degrader, tmp_path):
    from degrader.export import ExportConfig, export_shards, plan_export
    from degrader.shards import ShardMapDataset

    hr, _ = tiny_folders
    runs = {}
    for device in ("cpu", "cuda"):
        config = ExportConfig(
            degrader=str(learned_degrader), hr=str(hr), out=str(tmp_path / device), per_image=2, samples_per_shard=5,
            workers=0, batch_size=4, device=device,
        )  # fmt: skip
        runs[device] = export_shards(plan_export(config))
    assert runs["cpu"]["totals"] == runs["cuda"]["totals"]
    cpu, gpu = ShardMapDataset(tmp_path / "cpu"), ShardMapDataset(tmp_path / "cuda")
    assert len(cpu) == len(gpu) == 12
    for i in range(len(cpu)):
        a, b = cpu[i], gpu[i]
        assert torch.equal(a["gt"], b["gt"])
        assert (a["lq"] - b["lq"]).abs().max() <= 2 / 255  # 8-bit LR: at most a rounding step or two apart
