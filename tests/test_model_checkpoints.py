"""Checkpoints written before the networks had named parts, and damaged or hostile checkpoint metadata."""

from __future__ import annotations

import json
import random
import resource
import signal
import struct

import pytest
import torch
from safetensors.torch import save_file

from degrader.checkpoint import DEGRADER_FILE, DEGRADER_KIND, Degrader, load_checkpoint, module_tensors, save_checkpoint
from degrader.errors import UserError
from degrader.gan import LossConfig, adam
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.nets import FORMAT, Discriminator, DiscriminatorConfig
from degrader.run import STATE_FILE, load_state, save_state
from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, load_sr_generator

TINY_HL = dict(hr_size=32, scale=4, width=8, blocks_per_group=1, d_width=8, z_dim=16, residual=True)
TINY_LH = dict(width=8, blocks=(1, 1, 1), d_width=8, residual=True, scale=2)


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and BN statistic random, so a tensor loaded into the wrong slot would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return net


def old_layout(prefix: str, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors format 1 stored: each network as one anonymous Sequential, as the code before named parts.

    A generator was `body = Sequential(first conv, *blocks, BN, ReLU, output conv)`; a discriminator was
    `features = Sequential(first conv, *blocks, ReLU, Flatten)` and `score` (the linear layer).
    """
    parts = {k: v for k, v in net.named_children() if k not in ("head", "body", "tail")}
    if isinstance(net, Discriminator):
        parts["features"] = torch.nn.Sequential(net.head, *net.body, net.tail.act, net.tail.flatten)
        parts["score"] = net.tail.fc
    else:
        parts["body"] = torch.nn.Sequential(net.head, *net.body, *net.tail)
    return {f"{prefix}.{name}.{k}": v for name, part in parts.items() for k, v in part.state_dict().items()}


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------------------------------------ format 1


def test_old_degrader_checkpoint_loads(tmp_path):
    net = randomised(HighToLowGenerator(HighToLowConfig(**TINY_HL)))
    old = old_layout("net_g", net)
    n = 1 + len(net.body) + 3  # the old Sequential: first conv, blocks and poolings, BN, ReLU, output conv
    assert old["net_g.body.0.weight"].shape == (8, 4, 3, 3)  # the first conv took HR + the noise channel
    assert old[f"net_g.body.{n - 1}.weight"].shape == (3, 8, 3, 3) and f"net_g.body.{n - 3}.running_var" in old
    assert "net_g.noise.fc.weight" in old and not any(".head." in k or ".tail." in k for k in old)
    path = tmp_path / DEGRADER_FILE
    save_checkpoint(path, old, {"kind": DEGRADER_KIND, "config": vars(net.config), "format": 1, "version": "0.1.0"})
    loaded = Degrader.load(path)
    assert_same_state(loaded.net_g, net)
    hr = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.degrade(hr, [1, 2]), Degrader(net).degrade(hr, [1, 2]))


def test_old_sr_checkpoint_loads(tmp_path):
    net = randomised(LowToHighGenerator(LowToHighConfig(**TINY_LH)), seed=1)
    meta = {"kind": "low-to-high", "config": vars(net.config), "step": 4, "format": 1, "version": "0.1.0"}
    save_checkpoint(tmp_path / SR_FILE, old_layout("net_g", net), meta)
    loaded, meta = load_sr_generator(tmp_path)
    assert_same_state(loaded, net)
    assert meta["step"] == 4


def test_old_training_state_resumes_with_optimizer_state(tmp_path):
    """A format-1 state: both networks renamed, and Adam's per-index state still lines up with the parameters."""
    config = HighToLowConfig(**{**TINY_HL, "residual": False})
    nets = {"net_g": HighToLowGenerator(config), "net_d": Discriminator(config.discriminator())}
    opts = {"opt_g": adam(nets["net_g"], LossConfig()), "opt_d": adam(nets["net_d"], LossConfig())}
    for name, net in nets.items():  # one update each, so Adam holds exp_avg for every parameter
        net(torch.rand(2, 3, 32, 32), torch.randn(2, 16)).mean().backward() if name == "net_g" else None
        net(torch.rand(2, 3, 8, 8)).mean().backward() if name == "net_d" else None
    for opt in opts.values():
        opt.step()
    save_state(tmp_path, 7, nets, opts, {})
    tensors, meta = load_checkpoint(tmp_path / STATE_FILE, "train-state")
    old = {k: v for k, v in tensors.items() if not k.startswith(("net_g.", "net_d."))}
    old |= old_layout("net_g", nets["net_g"]) | old_layout("net_d", nets["net_d"])
    assert "net_d.features.0.parametrizations.weight.original" in old and "net_d.score.bias" in old
    save_checkpoint(tmp_path / STATE_FILE, old, {**meta, "format": 1, "version": "0.1.0"})

    fresh = {"net_g": HighToLowGenerator(config), "net_d": Discriminator(config.discriminator())}
    fresh_opts = {"opt_g": adam(fresh["net_g"], LossConfig()), "opt_d": adam(fresh["net_d"], LossConfig())}
    assert load_state(tmp_path, fresh, fresh_opts, {}) == 7
    for name in nets:
        assert_same_state(fresh[name], nets[name])
    for name, opt in opts.items():
        for p, q in zip(opt.param_groups[0]["params"], fresh_opts[name].param_groups[0]["params"], strict=True):
            a, b = opt.state[p], fresh_opts[name].state[q]
            assert a["exp_avg"].shape == p.shape and torch.equal(a["exp_avg"], b["exp_avg"])


@pytest.mark.parametrize("fmt", [FORMAT + 1, 0, "1", 1.0, True, None, "missing"])
def test_unknown_format_names_the_version(tmp_path, fmt):
    net = HighToLowGenerator(HighToLowConfig(**TINY_HL))
    meta = {"kind": DEGRADER_KIND, "config": vars(net.config), "format": fmt, "version": "7.3.1"}
    if fmt == "missing":
        del meta["format"]
    path = tmp_path / DEGRADER_FILE
    save_file(module_tensors("net_g", net), path, metadata={"degrader": json.dumps(meta)})
    with pytest.raises(UserError) as info:
        Degrader.load(path)
    message = str(info.value)
    assert str(path) in message and "7.3.1" in message and f"format {fmt if fmt != 'missing' else None!r}" in message
    assert ("upgrade degrader" if fmt == FORMAT + 1 else "is the file damaged?") in message and "\n" not in message


# ------------------------------------------------------------------------------------------------ bad configs


def save_with(path, meta_json: str, net: torch.nn.Module) -> None:
    save_file(module_tensors("net_g", net), path, metadata={"degrader": meta_json})


@pytest.mark.parametrize(
    "change,field",
    [
        ({"width": 2**31}, "'width' is 2147483648"),
        ({"width": -1}, "'width' is -1"),
        ({"width": "8"}, "'width' is '8'"),
        ({"width": True}, "'width' is True"),
        ({"z_dim": 16.0}, "'z_dim' is 16.0"),
        ({"hr_size": None}, "'hr_size' is None"),
        ({"residual": 1}, "'residual' is 1"),
        ({"blocks_per_group": 10**30}, "'blocks_per_group'"),
        ({"surprise": 1}, "unknown model config field(s) surprise"),
    ],
)
def test_hostile_degrader_config_is_refused_before_building(tmp_path, change, field):
    net = HighToLowGenerator(HighToLowConfig(**TINY_HL))
    path = tmp_path / DEGRADER_FILE
    meta = {"kind": DEGRADER_KIND, "config": {**vars(net.config), **change}, "format": FORMAT}
    save_with(path, json.dumps(meta), net)
    with pytest.raises(UserError) as info:
        Degrader.load(path)
    assert str(path) in str(info.value) and field in str(info.value)


@pytest.mark.parametrize(
    "meta_json,expected",
    [
        ("[1, 2, 3]", "not a JSON object"),
        ('"high-to-low"', "not a JSON object"),
        (json.dumps({"kind": DEGRADER_KIND, "format": FORMAT, "config": [64, 4]}), "config is a list"),
        (json.dumps({"kind": DEGRADER_KIND, "format": FORMAT, "config": "x"}), "config is a str"),
        (json.dumps({"kind": DEGRADER_KIND, "format": "2"}), "format '2'"),
    ],
)
def test_damaged_metadata_is_a_user_error(tmp_path, meta_json, expected):
    path = tmp_path / DEGRADER_FILE
    save_with(path, meta_json, HighToLowGenerator(HighToLowConfig(**TINY_HL)))
    with pytest.raises(UserError, match=expected):
        Degrader.load(path)


@pytest.mark.parametrize(
    "change,field",
    [({"blocks": [2**31]}, "'blocks'"), ({"blocks": []}, "'blocks'"), ({"blocks": 3}, "'blocks'"),
     ({"scale": 1}, "'scale'"), ({"width": 0}, "'width'"), ({"d_width": [8]}, "'d_width'")],
)  # fmt: skip
def test_hostile_sr_config_is_refused(tmp_path, change, field):
    net = LowToHighGenerator(LowToHighConfig(**TINY_LH))
    config = {**vars(net.config), "blocks": list(net.config.blocks), **change}
    path = tmp_path / SR_FILE
    save_with(path, json.dumps({"kind": "low-to-high", "config": config, "format": FORMAT}), net)
    with pytest.raises(UserError, match=field):
        load_sr_generator(path)


def test_a_huge_config_in_range_is_refused_without_allocating_it(tmp_path):
    """The largest config the ranges allow asks for about 5 GB; the loader compares shapes on the meta device."""
    net = HighToLowGenerator(HighToLowConfig(**TINY_HL))
    huge = {**vars(net.config), "hr_size": 512, "scale": 1, "z_dim": 512, "width": 512, "blocks_per_group": 16}
    path = tmp_path / DEGRADER_FILE
    save_with(path, json.dumps({"kind": DEGRADER_KIND, "config": huge, "format": FORMAT}), net)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(
        UserError, match=r"does not fit this model \(net_g\.body\.0\.1\.body\.0\.bias: missing in the file"
    ):
        Degrader.load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500_000


def test_discriminator_config_from_dict():
    assert DiscriminatorConfig.from_dict({"in_size": 64, "width": 8}, "x") == DiscriminatorConfig(64, 8)
    with pytest.raises(UserError, match="'in_size' is 99999"):
        DiscriminatorConfig.from_dict({"in_size": 99999}, "x")


# ------------------------------------------------------------------------------------------------ fuzz


class Hang(Exception):
    pass


def test_fuzzed_checkpoint_bytes_give_a_user_error_or_a_model(tmp_path):
    """300 seeded mutations of a valid checkpoint: every load ends in a UserError or a working model."""
    net = randomised(HighToLowGenerator(HighToLowConfig(**TINY_HL)))
    good = tmp_path / "good.safetensors"
    Degrader(net).save(good)
    data = good.read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    meta_start = data.index(b'"degrader":"') + 12  # the metadata JSON, escaped inside the safetensors header
    meta_end = data.index(b'}"', meta_start)
    rng = random.Random(0)
    path = tmp_path / DEGRADER_FILE
    outcomes = {"error": 0, "model": 0}
    hr = torch.rand(1, 3, 32, 32)

    def on_alarm(*_):
        raise Hang

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for i in range(300):
            b = bytearray(data)
            where = rng.random()
            for _ in range(rng.randint(1, 3)):
                if where < 0.6:  # our metadata, with characters that often keep the outer JSON valid
                    b[rng.randrange(meta_start, meta_end)] = rng.choice(b"0123456789-.eE:,[]{}atfnx")
                elif where < 0.8:  # the safetensors header: names, dtypes, shapes, offsets
                    b[rng.randrange(header_end)] = rng.randrange(256)
                else:  # the weights
                    b[rng.randrange(header_end, len(b))] = rng.randrange(256)
            if rng.random() < 0.05:
                b = b[: rng.randrange(len(b))]
            path.write_bytes(bytes(b))
            signal.alarm(5)
            try:
                deg = Degrader.load(path)
                assert deg.degrade(hr, [0]).shape == (1, 3, 8, 8), i
                outcomes["model"] += 1
            except UserError as e:
                assert str(path) in str(e) and "\n" not in str(e), (i, str(e))
                outcomes["error"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert outcomes["error"] > 100 and outcomes["model"] > 10, outcomes
