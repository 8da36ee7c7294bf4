import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sr.finetune
from degrader.checkpoint import DEGRADER_FILE, Degrader
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.synthetic import make_faces
from sr.finetune import FinetuneConfig, finetune, plan_finetune
from sr.model import PRESETS, SR_FILE, LowToHighConfig, LowToHighGenerator, load_sr_generator, save_sr_generator
from sr.train import SRTrainConfig, plan_train, train

TINY = dict(width=8, blocks=(1, 1, 1), residual=True, d_width=8)


@pytest.fixture(autouse=True)
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    monkeypatch.setitem(PRESETS, "tiny-tanh", {**TINY, "residual": False})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "hr").mkdir()
    (root / "lr").mkdir()
    for i, img in enumerate(make_faces(12, 64, seed=0)):
        img.save(root / "hr" / f"{i:03d}.png")
    for i, img in enumerate(make_faces(8, 16, seed=1)):
        img.save(root / "lr" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def learned_degrader(tmp_path_factory):
    """A tiny, untrained High-to-Low generator saved as a `degrade fit` run would."""
    run = tmp_path_factory.mktemp("degrader-run")
    torch.manual_seed(0)
    net = HighToLowGenerator(HighToLowConfig(z_dim=8, width=8, blocks_per_group=1, residual=True, d_width=8))
    torch.nn.init.normal_(net.tail.conv.weight, std=0.05)  # some noise-dependent output, not plain avg pooling
    Degrader(net).save(run / DEGRADER_FILE)
    return run


@pytest.fixture(scope="module")
def shards(folders, tmp_path_factory):
    from degrader.export import ExportConfig, export_shards, plan_export

    out = tmp_path_factory.mktemp("shards")
    export_shards(
        plan_export(
            ExportConfig(degrader="bicubic", hr=str(folders / "hr"), out=str(out), samples_per_shard=5, workers=0)
        )
    )
    return out


def config(tmp_path, name="run", **kw) -> SRTrainConfig:
    base = dict(
        out=str(tmp_path / name), preset="tiny", steps=4, batch_size=4, loss=LossConfig(d_steps=1), device="cpu",
        workers=0, sample_every=2, checkpoint_every=100, log_every=1,
    )  # fmt: skip
    return SRTrainConfig(**{**base, **kw})


def sr_run_dir(tmp_path, step: int = 0):
    """A tiny, untrained SR generator saved as an `sr train` run would."""
    run = tmp_path / "sr-run"
    run.mkdir()
    save_sr_generator(run / SR_FILE, LowToHighGenerator(LowToHighConfig(**TINY)), step=step)
    return run


def ft_config(tmp_path, folders, learned_degrader, sr_run, name="ft", **kw) -> FinetuneConfig:
    base = dict(
        degrader=str(learned_degrader), sr=str(sr_run), hr=str(folders / "hr"), lr=str(folders / "lr"),
        out=str(tmp_path / name), steps=2, batch_size=4, loss=LossConfig(d_steps=1), device="cpu", workers=0,
    )  # fmt: skip
    return FinetuneConfig(**{**base, **kw})


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / SR_FILE)


def test_pixel_loss_goes_down(tmp_path, folders):
    seen = []
    cfg = config(tmp_path, degrader="bicubic", hr=str(folders / "hr"), preset="tiny-tanh", steps=30, pixel_only=True)
    cfg.loss, cfg.sample_every = LossConfig(lr=2e-3), 100
    result = train(plan_train(cfg), lambda step, total, logs: seen.append(logs["g_pixel"]))
    assert result.step == 30 and not result.interrupted
    assert all(torch.isfinite(torch.tensor(seen)))
    assert sum(seen[-5:]) / 5 < 0.5 * sum(seen[:5]) / 5
    assert "d_loss" not in result.logs  # pixel-only: no discriminator step at all


@pytest.mark.parametrize("source", ["blur-bilinear", "learned", "shards"])
def test_interrupted_and_resumed_equals_straight_run(tmp_path, folders, learned_degrader, shards, source):
    data = {
        "blur-bilinear": dict(degrader="blur-bilinear", hr=str(folders / "hr")),
        "learned": dict(degrader=str(learned_degrader), hr=str(folders / "hr")),
        "shards": dict(shards=str(shards)),
    }[source]
    straight = train(plan_train(config(tmp_path, "straight", **data)))
    assert straight.step == 4

    def ctrl_c_at_2(step, total, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled by the loop: finish the step, save, stop

    cut = train(plan_train(config(tmp_path, "cut", **data)), ctrl_c_at_2)
    assert cut.interrupted and cut.step == 2
    assert load_sr_generator(cut.out)[1]["step"] == 2
    resumed = train(plan_train(config(tmp_path, "cut", resume=True, **data)))
    assert resumed.step == 4 and not resumed.interrupted
    a, b = weights(straight.out), weights(resumed.out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (resumed.out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert sorted(p.name for p in (resumed.out / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]


def test_warmup_trains_the_pixel_loss_first_and_resumes_across_the_switch(tmp_path, folders):
    data = dict(degrader="blur-bilinear", hr=str(folders / "hr"), steps=5, warmup_steps=3)
    straight = train(plan_train(config(tmp_path, "straight", **data)))
    log = [json.loads(line) for line in (straight.out / "log.jsonl").read_text().splitlines()]
    assert [r["g_adv"] == 0.0 for r in log] == [True, True, True, False, False]
    assert ["d_loss" in r for r in log] == [False, False, False, True, True]  # D waits for the GAN loss
    # 3 warm-up steps take one batch each, the 2 GAN steps 1 + d_steps batches each.
    assert SRTrainConfig(out="x", warmup_steps=3, batch_size=4, loss=LossConfig(d_steps=1)).pairs_before(5) == 28

    def ctrl_c_at_2(step, total, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(plan_train(config(tmp_path, "cut", **data)), ctrl_c_at_2).step == 2
    resumed = train(plan_train(config(tmp_path, "cut", resume=True, **data)))
    a, b = weights(straight.out), weights(resumed.out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_changes_the_weights_and_loads_back(tmp_path, folders):
    cfg = config(tmp_path, degrader="bicubic", hr=str(folders / "hr"), scale=2)
    result = train(plan_train(cfg))
    net, meta = load_sr_generator(result.out)
    assert meta["step"] == 4 and net.config.scale == 2 and net.config.hr_size == 32
    fresh = LowToHighGenerator(net.config)
    assert not torch.equal(fresh.tail.conv.weight, net.tail.conv.weight)


def test_shard_training_follows_the_data_and_crops(tmp_path, shards):
    plan = plan_train(config(tmp_path, shards=str(shards)))
    assert (plan.model.scale, plan.model.lr_size, plan.samples) == (4, 16, 12)
    result = train(plan_train(config(tmp_path, shards=str(shards), lr_size=8, steps=2)))
    assert load_sr_generator(result.out)[0].config.hr_size == 32


def test_finetune_writes_and_changes_both_networks(tmp_path, folders, learned_degrader):
    torch.manual_seed(1)
    sr_run = sr_run_dir(tmp_path, step=10)
    result = finetune(plan_finetune(ft_config(tmp_path, folders, learned_degrader, sr_run)))
    assert result.step == 2
    deg_before, deg_after = Degrader.load(learned_degrader), Degrader.load(result.out)
    sr_before, _ = load_sr_generator(sr_run)
    sr_after, meta = load_sr_generator(result.out)
    assert deg_after.step == 2 and meta["step"] == 12
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))  # noqa: E731
    assert changed(deg_before.net_g, deg_after.net_g)
    assert changed(sr_before, sr_after)
    assert (result.out / "samples" / "step-000002.png").is_file()


def test_sr_loss_reaches_the_degrader(folders, learned_degrader, tmp_path, monkeypatch):
    """With the degrader's own loss zeroed, a joint step still moves it: the SR loss flows HR -> degrader -> SR."""
    real_loss = sr.finetune.generator_loss

    def sr_loss_only(fake, target, net_d, loss):
        total, logs = real_loss(fake, target, net_d, loss)
        return (total * 0 if fake.shape[-1] < 64 else total), logs  # (B, 3, 16, 16): the degrader's own loss

    monkeypatch.setattr(sr.finetune, "generator_loss", sr_loss_only)
    cfg = ft_config(tmp_path, folders, learned_degrader, sr_run_dir(tmp_path), steps=1)
    out = finetune(plan_finetune(cfg)).out
    before, after = Degrader.load(learned_degrader).net_g, Degrader.load(out).net_g
    moved = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True)]
    assert all(moved)  # every layer of the degrader lies on the path to the SR output


def test_bad_inputs_are_user_errors(tmp_path, folders, learned_degrader, shards):
    hr = str(folders / "hr")
    with pytest.raises(UserError, match="either --shards"):
        plan_train(config(tmp_path))
    with pytest.raises(UserError, match="either --shards"):
        plan_train(config(tmp_path, shards=str(shards), degrader="bicubic", hr=hr))
    with pytest.raises(UserError, match="--hr"):
        plan_train(config(tmp_path, degrader="bicubic"))
    with pytest.raises(UserError, match="--hr"):
        plan_train(config(tmp_path, degrader="bicubic", hr=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="--scale"):
        plan_train(config(tmp_path, degrader=str(learned_degrader), hr=hr, scale=2))
    sr_run = sr_run_dir(tmp_path)
    with pytest.raises(UserError, match="high-to-low"):  # an SR checkpoint where a degrader is needed
        plan_train(config(tmp_path, degrader=str(sr_run / SR_FILE), hr=hr))
    ft = dict(hr=hr, lr=str(folders / "lr"), out=str(tmp_path / "ft"), device="cpu")
    with pytest.raises(UserError, match="--sr x: no such checkpoint file"):
        plan_finetune(FinetuneConfig(degrader=str(learned_degrader), sr="x", **ft))
    with pytest.raises(UserError, match="low-to-high"):  # a degrader where an SR model is needed
        plan_finetune(FinetuneConfig(degrader=str(learned_degrader), sr=str(learned_degrader / DEGRADER_FILE), **ft))
    x2 = tmp_path / "x2"
    x2.mkdir()
    save_sr_generator(x2 / SR_FILE, LowToHighGenerator(LowToHighConfig(scale=2, **TINY)), step=0)
    with pytest.raises(UserError, match="same scale"):
        plan_finetune(FinetuneConfig(degrader=str(learned_degrader), sr=str(x2), **ft))


def test_cli_train_dry_run_and_errors(tmp_path, folders):
    from cli.sr import sr

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["train", "--degrader", "bicubic", "--hr", str(folders / "hr"), "--out", str(out)]
    res = runner.invoke(sr, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "12 HR images" in res.output and not out.exists()
    res = runner.invoke(sr, ["train", "--out", str(out)])
    assert res.exit_code == 1 and "either --shards" in res.output and "Traceback" not in res.output
    res = runner.invoke(sr, [*args, "--steps", "1", "--batch-size", "2", "--set=loss.d_steps=1", "--set=workers=0"])
    assert res.exit_code == 0, res.output
    assert (out / SR_FILE).is_file()


def test_finetune_resume_equals_straight_run(tmp_path, folders, learned_degrader):
    torch.manual_seed(2)
    sr_run = sr_run_dir(tmp_path)

    def cfg(name, **kw):
        return ft_config(
            tmp_path, folders, learned_degrader, sr_run, name, steps=3, batch_size=2, sample_every=100, **kw
        )

    def ctrl_c_at_1(step, total, logs):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    straight = finetune(plan_finetune(cfg("straight")))
    cut = finetune(plan_finetune(cfg("cut")), ctrl_c_at_1)
    assert cut.interrupted and cut.step == 1
    resumed = finetune(plan_finetune(cfg("cut", resume=True)))
    for name in (SR_FILE, DEGRADER_FILE):
        a, b = load_file(straight.out / name), load_file(resumed.out / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_cli_finetune_dry_run(tmp_path, folders, learned_degrader):
    from cli.sr import sr

    sr_run = sr_run_dir(tmp_path)
    args = ["finetune", "--degrader", str(learned_degrader), "--sr", str(sr_run), "--hr", str(folders / "hr")]
    res = CliRunner().invoke(sr, [*args, "--lr", str(folders / "lr"), "--out", str(tmp_path / "ft"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "12 HR images, 8 real LR images" in res.output and not (tmp_path / "ft").exists()


def test_cli_finetune_resume_takes_the_options_from_the_runs_config(tmp_path, folders, learned_degrader):
    from cli.sr import sr

    out = tmp_path / "ft"
    args = ["finetune", "--degrader", learned_degrader, "--sr", sr_run_dir(tmp_path), "--hr", folders / "hr"]
    args += ["--lr", folders / "lr", "--out", out, "--steps", "1", "--batch-size", "2", "--set", "loss.d_steps=1"]
    first = CliRunner().invoke(sr, [str(a) for a in [*args, "--set", "workers=0", "--device", "cpu"]])
    assert first.exit_code == 0, first.output
    # no --degrader, --sr, --hr, --lr or loss.d_steps: they come from config.json, and the run continues
    resumed = CliRunner().invoke(sr, ["finetune", "--out", str(out), "--resume", "--steps", "2", "--set", "workers=0"])
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert (config["lr"], config["steps"], config["loss"]["d_steps"]) == (str(folders / "lr"), 2, 1)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()][-1] == 2
    missing = CliRunner().invoke(sr, ["finetune", "--out", str(tmp_path / "new")])
    assert missing.exit_code == 2 and "missing option --degrader, --sr, --hr, --lr" in missing.output
