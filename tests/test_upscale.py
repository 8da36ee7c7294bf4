"""SuperResolver: loading, tiling equal to a whole-image pass, bounded tile sizes."""

from __future__ import annotations

import pytest
import torch

from degrader.errors import UserError
from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, save_sr_generator
from sr.upscale import SuperResolver, tile_windows, upscale_files

TINY = dict(width=8, blocks=(1, 1, 1), d_width=8)


def make_net(scale: int = 4, residual: bool = False) -> LowToHighGenerator:
    """An untrained tiny generator whose batch norms have non-trivial running statistics."""
    torch.manual_seed(0)
    net = LowToHighGenerator(LowToHighConfig(scale=scale, residual=residual, **TINY))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(net.tail.conv.weight, std=0.1)  # residual nets start at zero here
    return net.eval()


@pytest.fixture
def run_dir(tmp_path):
    save_sr_generator(tmp_path / SR_FILE, make_net(), step=7)
    return tmp_path


def whole(sr: SuperResolver, lr: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ((sr.net_g(lr * 2 - 1) + 1) / 2).clamp(0, 1)


def test_load_run_dir_and_file(run_dir):
    sr = SuperResolver.load(run_dir)
    assert (sr.scale, sr.step, sr.name, len(sr.sha256)) == (4, 7, run_dir.name, 64)
    assert not sr.net_g.training
    assert SuperResolver.load(run_dir / SR_FILE).name == "sr"
    with pytest.raises(UserError, match="no such checkpoint"):
        SuperResolver.load(run_dir / "missing")


def test_context_is_the_receptive_field(run_dir):
    sr = SuperResolver.load(run_dir)
    r = sr.context
    assert r is not None and 2 <= r < 16
    # changing one LR pixel changes outputs r LR pixels away, but none beyond
    lr = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    bumped = lr.clone()
    bumped[..., 24, 24] += 0.5
    diff = (whole(sr, bumped) - whole(sr, lr)).abs().sum(dim=(0, 1)) > 0  # (192, 192)
    rows = torch.nonzero(diff.any(dim=1)).flatten() // sr.scale  # LR rows whose outputs changed
    assert rows.min() >= 24 - r and rows.max() <= 24 + r
    assert rows.min() <= 24 - r + 1  # the measured radius is tight, not a loose bound


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_equals_whole_image(tmp_path, scale):
    save_sr_generator(tmp_path / SR_FILE, make_net(scale=scale), step=0)
    sr = SuperResolver.load(tmp_path)
    lr = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(2))  # not a multiple of the tile
    ref = whole(sr, lr)
    tiled = sr.upscale(lr, tile=16, batch_size=5)
    assert tiled.shape == (2, 3, 37 * scale, 53 * scale)
    assert (tiled - ref).abs().max() < 1e-5


def test_small_overlap_matches_away_from_tile_borders(run_dir):
    sr = SuperResolver.load(run_dir)
    lr = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    ref, tiled = whole(sr, lr), sr.upscale(lr, tile=16, overlap=1)
    err = (tiled - ref).abs().amax(dim=(0, 1))  # (192, 192)
    assert err.max() > 1e-3  # seams exist: the test can fail
    # an LR pixel at distance d from its core's inner borders sees d + 1 pixels of context there
    far = sr.context - 1
    s = sr.scale
    inner = err[(16 + far) * s : (32 - far) * s, (16 + far) * s : (32 - far) * s]  # the middle core's centre
    assert inner.numel() > 0 and inner.max() < 1e-5


def test_large_image_runs_in_bounded_tiles(run_dir):
    sr = SuperResolver.load(run_dir)
    seen: list[tuple[int, ...]] = []
    sr.net_g.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    lr = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(4))  # ~10x the tile on each side
    out = sr.upscale(lr, tile=16, batch_size=4)
    window = 16 + 2 * sr.context
    assert len(seen) == -(-10 * 15 // 4)  # 10 x 15 tiles in batches of 4
    assert all(n <= 4 and h == window and w == window for n, _, h, w in seen)
    assert out.shape == (1, 3, 600, 920) and out.min() >= 0 and out.max() <= 1
    assert (out - whole(sr, lr)).abs().max() < 1e-5


def test_single_image_small_image_and_bad_input(run_dir):
    sr = SuperResolver.load(run_dir)
    lr = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(5))
    out = sr.upscale(lr)
    assert out.shape == (3, 48, 40)
    assert torch.allclose(out, whole(sr, lr[None])[0], atol=1e-6)
    with pytest.raises(ValueError, match="expected LR images"):
        sr.upscale(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        sr.upscale(lr, tile=0)


@pytest.mark.parametrize("length", [1, 15, 16, 17, 40, 64, 100])
@pytest.mark.parametrize("margin", [0, 3, 20])
def test_tile_windows_cover_each_pixel_once_with_margin(length, margin):
    window, cuts = tile_windows(length, 16, margin)
    covered = [0] * length
    for w0, c0, c1 in cuts:
        assert 0 <= w0 <= c0 < c1 <= w0 + window <= length
        assert c0 - w0 >= margin or w0 == 0
        assert w0 + window - c1 >= margin or w0 + window == length
        for i in range(c0, c1):
            covered[i] += 1
    assert covered == [1] * length


def test_cli_upscale_mixed_good_and_unreadable(run_dir, tmp_path):
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from cli.sr_use import upscale

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rs = np.random.RandomState(0)
    Image.fromarray(rs.randint(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rs.randint(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    single = tmp_path / "single.png"
    Image.fromarray(rs.randint(0, 256, (9, 7), dtype=np.uint8), "L").save(single)  # grayscale: converted
    out = tmp_path / "out"
    args = ["--checkpoint", str(run_dir), str(folder), str(single), str(tmp_path / "missing.png"), "--out", str(out)]
    result = CliRunner().invoke(upscale, [*args, "--tile", "8", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "missing.png" in result.output
    assert "2 of 5 inputs failed" in result.output and "Traceback" not in result.output
    assert Image.open(out / "a.png").size == (120, 80)
    assert Image.open(out / "sub" / "b.png").size == (48, 48)
    assert Image.open(out / "single.png").size == (28, 36)
    assert not (out / "broken.png").exists() and not list(out.rglob("*.tmp"))
    # the file holds the library's result, rounded to 8 bits
    sr = SuperResolver.load(run_dir)
    lr = torch.from_numpy(np.array(Image.open(folder / "a.png"))).permute(2, 0, 1).float() / 255
    expected = sr.upscale(lr[None])[0].mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), expected)
    # a non-empty --out is refused without --overwrite; all good with it: exit 0
    result = CliRunner().invoke(upscale, ["--checkpoint", str(run_dir), str(single), "--out", str(out)])
    assert result.exit_code == 1 and f"--out {out} is not empty; pass --overwrite" in result.output
    result = CliRunner().invoke(upscale, ["--checkpoint", str(run_dir), str(single), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output


def test_cli_upscale_bad_checkpoint_and_out(run_dir, tmp_path):
    from click.testing import CliRunner

    from cli.sr_use import upscale

    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"nope")
    result = CliRunner().invoke(upscale, ["--checkpoint", str(bogus), str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a readable safetensors" in result.output


def save_png(path, seed: int, size=(8, 8)) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def test_upscale_files_names_and_refusals(run_dir, tmp_path):
    from PIL import Image

    sr = SuperResolver.load(run_dir)
    src = tmp_path / "src"
    save_png(src / "photo.png", 0)
    save_png(src / "photo.jpg", 1)  # same stem: the second in scan order (photo.png) keeps its suffix
    save_png(src / "sub" / "c.png", 2)
    calls = []
    written, failed = upscale_files(sr, [src], tmp_path / "out", on_progress=lambda *a: calls.append(a[:2]))
    assert failed == [] and calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "photo.png", "photo.png.png", "sub/c.png"
    ]  # fmt: skip
    assert all(Image.open(p).size == (32, 32) and Image.open(p).mode == "RGB" for p in written)

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=f"--out {tmp_path / 'file'} is a file"):
        upscale_files(sr, [src], tmp_path / "file")
    with pytest.raises(UserError, match="is not empty; pass --overwrite"):
        upscale_files(sr, [src], tmp_path / "out")
    assert upscale_files(sr, [src], tmp_path / "out", overwrite=True)[1] == []


def test_upscale_files_never_writes_over_an_input(run_dir, tmp_path):
    sr = SuperResolver.load(run_dir)
    src = tmp_path / "src"
    save_png(src / "a.png", 0)
    save_png(src / "b.jpg", 1)
    before = (src / "a.png").read_bytes()
    written, failed = upscale_files(sr, [src], src, overwrite=True)  # --out is the input folder
    assert written == [src / "b.png"]
    assert [(p, why) for p, why in failed] == [
        (src / "a.png", f"the output {src / 'a.png'} would overwrite an input; choose another --out.")
    ]
    assert (src / "a.png").read_bytes() == before
