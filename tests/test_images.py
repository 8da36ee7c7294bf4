"""Tests for degrader.images: scanning, decoding, preparation, datasets, sampling and loading."""

from __future__ import annotations

import io
import os
import random
import signal
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from degrader.errors import UserError
from degrader.images import (
    BadImageError,
    ImageFolder,
    load_rgb,
    prepare,
    save_grid,
    scan_images,
    to_tensor,
)
from degrader.loader import InfiniteSampler, make_loader


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def write(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ scan


def test_scan_recurses_sorts_and_filters_suffixes(tmp_path):
    write(tmp_path / "b.png", noise_image(8, 8))
    write(tmp_path / "A.JPG", noise_image(8, 8), format="JPEG")
    write(tmp_path / "sub" / "deep" / "c.webp", noise_image(8, 8))
    write(tmp_path / "a" / "z.bmp", noise_image(8, 8))
    write(tmp_path / "notes.txt.png.gif", noise_image(8, 8), format="GIF")  # .gif is not in the list
    (tmp_path / "readme.txt").write_text("hello")
    write(tmp_path / ".hidden" / "h.png", noise_image(8, 8))
    scan = scan_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in scan.paths]
    assert rel == ["A.JPG", "a/z.bmp", "b.png", "sub/deep/c.webp"]
    assert scan.skipped == []
    assert scan.root == tmp_path


def test_scan_skips_and_counts_bad_files(tmp_path):
    good = write(tmp_path / "good.jpg", noise_image(40, 30), format="JPEG")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    data = jpeg_bytes(noise_image(64, 64))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    write(tmp_path / "small.png", noise_image(20, 18))
    scan = scan_images(tmp_path, min_size=24)
    assert scan.paths == [good]
    reasons = {p.name: r for p, r in scan.skipped}
    assert reasons == {"garbage.jpg": "not an image", "cut.jpg": "truncated", "small.png": "too small (20x18 < 24)"}


def test_scan_accepts_jpeg_with_trailer_after_eoi(tmp_path):
    (tmp_path / "trailer.jpg").write_bytes(jpeg_bytes(noise_image(16, 16)) + b"\0" * 200)
    assert len(scan_images(tmp_path).paths) == 1


@pytest.mark.parametrize("case", ["missing", "file", "empty", "non_images", "all_bad"])
def test_scan_errors_name_option_and_path(tmp_path, case):
    target = tmp_path / "data"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "non_images":
        target.mkdir()
        (target / "a.txt").write_text("x")
        (target / "b.csv").write_text("x")
    elif case == "all_bad":
        (target / "x").mkdir(parents=True)
        (target / "x" / "bad.png").write_bytes(b"nope")
        write(target / "tiny.png", noise_image(10, 10))
    with pytest.raises(UserError) as e:
        scan_images(target, min_size=16, option="--lr")
    msg = str(e.value)
    assert msg.startswith(f"--lr {target} ") and "\n" not in msg
    if case == "all_bad":
        assert "2 files" in msg and "16x16" in msg and "1 not an image" in msg and "1 too small" in msg


@contextmanager
def no_hang(seconds: int = 10):
    """Fail instead of blocking forever (a FIFO opened for reading waits for a writer)."""

    def on_alarm(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


@needs_fifo
def test_scan_skips_a_fifo_named_like_an_image(tmp_path):
    good = write(tmp_path / "a.png", noise_image(8, 8))
    os.mkfifo(tmp_path / "x.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with no_hang():
        scan = scan_images(tmp_path)
    assert scan.paths == [good]
    assert dict((p.name, r) for p, r in scan.skipped) == {
        "x.png": "not a regular file (a named pipe, socket or device)",
        "gone.png": "unreadable (No such file or directory)",
    }


@needs_fifo
def test_decoding_a_fifo_fails_at_once(tmp_path):
    """A file replaced by a FIFO after the scan: the loader names it and moves on to the next image."""
    paths = [write(tmp_path / f"{i}.png", noise_image(20, 20, seed=i)) for i in range(2)]
    paths[0].unlink()
    os.mkfifo(paths[0])
    with no_hang():
        with pytest.raises(BadImageError, match=r"0.png is not a regular file"):
            load_rgb(paths[0])
        ds = ImageFolder(paths, 16)
        assert torch.equal(ds[(0, 1)], ds[(1, 1)])


def corrupt_in_the_middle(path: Path) -> None:
    """Overwrite bytes inside the compressed image data; the header and the IEND chunk stay intact."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path.write_bytes(bytes(data))


def test_scan_skips_a_png_corrupt_in_the_middle(tmp_path):
    good = write(tmp_path / "a.png", noise_image(64, 64, seed=1))
    bad = write(tmp_path / "b.png", noise_image(64, 64, seed=2))
    corrupt_in_the_middle(bad)
    assert bad.read_bytes()[-12:-4] == b"\0\0\0\0IEND" and Image.open(bad).size == (64, 64)  # looks fine
    with pytest.raises(BadImageError, match="b.png"):
        load_rgb(bad)  # the damage shows only in a full decode ...
    scan = scan_images(tmp_path)  # ... or in the chunk checksums the scan reads
    assert scan.paths == [good]
    [(path, reason)] = scan.skipped
    assert path == bad and reason == "corrupt (broken PNG file, bad header checksum in IDAT)"


# ------------------------------------------------------------------------------------------------ decode


def test_load_rgb_grayscale_and_alpha(tmp_path):
    img = load_rgb(write(tmp_path / "l.png", Image.new("L", (4, 3), 77)))
    assert img.mode == "RGB" and img.size == (4, 3) and img.getpixel((0, 0)) == (77, 77, 77)
    img = load_rgb(write(tmp_path / "la.png", Image.new("LA", (4, 3), (200, 255))))
    assert img.getpixel((1, 1)) == (200, 200, 200)
    # RGBA is composited on black: half-transparent halves the colour.
    img = load_rgb(write(tmp_path / "rgba.png", Image.new("RGBA", (4, 3), (200, 100, 50, 128))))
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((2, 2)), (100, 50, 25), strict=True))


def test_load_rgb_palette_with_transparency(tmp_path):
    p = Image.new("P", (4, 2), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    p.putpixel((3, 1), 1)
    img = load_rgb(write(tmp_path / "p.png", p, transparency=0))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)  # transparent red -> black
    assert img.getpixel((3, 1)) == (0, 255, 0)


def test_load_rgb_16bit_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 257 * 100, 65535]], dtype=np.uint16)
    path = write(tmp_path / "g16.png", Image.fromarray(a))
    assert Image.open(path).mode.startswith("I")
    img = load_rgb(path)
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 100, 255]
    tif = load_rgb(write(tmp_path / "g16.tif", Image.fromarray(a)))
    assert tif.getpixel((2, 0)) == (100, 100, 100)


def test_load_rgb_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    cmyk.putpixel((1, 1), (0, 255, 255, 0))
    img = load_rgb(write(tmp_path / "c.tif", cmyk))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 1)) == (255, 0, 0)


def test_load_rgb_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = write(tmp_path / "rot.jpg", noise_image(40, 20), format="JPEG", exif=exif)
    assert Image.open(path).size == (40, 20)
    assert load_rgb(path).size == (20, 40)


def test_load_rgb_bad_file_names_it(tmp_path):
    data = jpeg_bytes(noise_image(64, 64))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="cut.jpg"):
        load_rgb(path)
    assert issubclass(BadImageError, UserError)


# ------------------------------------------------------------------------------------------------ prepare


def test_prepare_resize_centre_crops():
    a = np.zeros((60, 120, 3), dtype=np.uint8)
    a[:, :] = (0, 0, 255)
    a[:, 30:90] = (255, 0, 0)  # the centre square is red
    out = prepare(Image.fromarray(a), 30, "resize", random.Random(0))
    assert out.size == (30, 30)
    b = np.asarray(out).astype(int)
    assert (b[:, 1:-1, 0] >= 250).all() and (b[:, 1:-1, 2] <= 5).all()


def test_prepare_crop_is_native_and_deterministic():
    img = noise_image(50, 40, seed=1)
    src = np.asarray(img)
    out = prepare(img, 16, "crop", random.Random(7))
    assert out.size == (16, 16)
    assert np.array_equal(np.asarray(out), np.asarray(prepare(img, 16, "crop", random.Random(7))))
    got = np.asarray(out)
    hits = [(x, y) for y in range(25) for x in range(35) if np.array_equal(src[y : y + 16, x : x + 16], got)]
    assert len(hits) == 1  # an exact, unresampled window of the original
    crops = {np.asarray(prepare(img, 16, "crop", random.Random(s))).tobytes() for s in range(6)}
    assert len(crops) > 1
    g = torch.Generator().manual_seed(3)
    assert prepare(img, 16, "crop", g).size == (16, 16)
    with pytest.raises(UserError, match="smaller than the 64x64 crop"):
        prepare(img, 64, "crop", random.Random(0))


def test_to_tensor_and_save_grid(tmp_path):
    t = to_tensor(Image.new("RGB", (5, 3), (255, 0, 51)))
    assert t.shape == (3, 3, 5) and t.dtype == torch.float32
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    big = torch.zeros(2, 3, 8, 8)
    small = torch.ones(3, 3, 4, 4)
    small[0, 0, 0, 0] = 0.0  # one dark-red pixel that must become a 2x2 block
    path = tmp_path / "out" / "grid.png"
    save_grid([big, small], path)
    g = np.asarray(Image.open(path))
    pad = 2
    assert g.shape == (2 * 8 + 3 * pad, 3 * (8 + pad) + pad, 3)
    assert (g[pad : pad + 8, pad : pad + 8] == 0).all()
    y0 = 2 * pad + 8
    assert (g[y0 : y0 + 2, pad : pad + 2, 0] == 0).all() and (g[y0 : y0 + 2, pad : pad + 2, 1] == 255).all()
    assert g[y0 + 2, pad + 2, 0] == 255
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    save_grid([big], path, scale_to=16)
    assert np.asarray(Image.open(path)).shape[0] == 16 + 2 * pad


# ------------------------------------------------------------------------------------------------ dataset


@pytest.fixture
def folder(tmp_path) -> list[Path]:
    return [write(tmp_path / f"{i}.png", noise_image(30 + i, 24 + 2 * i, seed=i)) for i in range(6)]


def test_image_folder_shape_range_determinism(folder):
    ds = ImageFolder(folder, 16, prep="crop", augment="paper")
    assert len(ds) == 6
    x = ds[(2, 123)]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert torch.equal(x, ds[(2, 123)])
    assert not torch.equal(x, ds[(2, 124)])
    plain = ImageFolder(folder, 16, prep="resize", augment="none")
    assert torch.equal(plain[(1, 5)], plain[(1, 99)])  # no randomness to draw: the seed does not matter


def test_image_folder_flip_only_flips(folder):
    ds = ImageFolder(folder, 16, prep="resize", augment="flip")
    base = ImageFolder(folder, 16, prep="resize")[(0, 0)]
    outs = [ds[(0, s)] for s in range(8)]
    assert all(torch.equal(o, base) or torch.equal(o, base.flip(-1)) for o in outs)
    assert any(torch.equal(o, base.flip(-1)) for o in outs) and any(torch.equal(o, base) for o in outs)


def test_image_folder_leaves_global_rng_alone(folder):
    torch.manual_seed(0)
    random.seed(0)
    state, py_state = torch.get_rng_state(), random.getstate()
    ds = ImageFolder(folder, 16, prep="crop", augment="paper")
    for s in range(3):
        ds[(s, s)]
    assert torch.equal(state, torch.get_rng_state()) and py_state == random.getstate()


def test_image_folder_falls_back_on_broken_file(folder):
    data = folder[2].read_bytes()
    folder[2].write_bytes(data[: len(data) // 3])
    ds = ImageFolder(folder, 16, prep="crop", augment="paper")
    assert torch.equal(ds[(2, 42)], ds[(3, 42)])
    for p in folder:
        p.write_bytes(b"broken")
    with pytest.raises(BadImageError):
        ds[(0, 0)]


# ------------------------------------------------------------------------------------------------ sampling


def test_infinite_sampler_epochs_and_start():
    n = 10
    stream = list(islice(iter(InfiniteSampler(n, seed=3)), 3 * n))
    for e in range(3):
        assert sorted(i for i, _ in stream[e * n : (e + 1) * n]) == list(range(n))
    assert [i for i, _ in stream[:n]] != [i for i, _ in stream[n : 2 * n]]
    seeds = [s for _, s in stream]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    for k in (0, 4, 13, 20):
        assert list(islice(iter(InfiniteSampler(n, seed=3, start=k)), 7)) == stream[k : k + 7]
    assert stream != list(islice(iter(InfiniteSampler(n, seed=4)), 3 * n))


def test_make_loader_same_batches_for_any_worker_count(folder):
    kw = dict(batch_size=4, seed=11)
    a = list(islice(make_loader(folder, 16, "crop", "paper", workers=0, **kw), 3))
    b = list(islice(make_loader(folder, 16, "crop", "paper", workers=2, **kw), 3))
    assert all(x.shape == (4, 3, 16, 16) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    resumed = next(make_loader(folder, 16, "crop", "paper", start=2 * 4, **kw))
    assert torch.equal(resumed, a[2])


# ------------------------------------------------------------------------------------------------ decode cache


@pytest.mark.parametrize("prep", ["crop", "resize"])
def test_cache_gives_the_same_samples_and_decodes_each_image_once(folder, prep, monkeypatch):
    import degrader.images

    decoded = []
    real_load = degrader.images.load_rgb
    monkeypatch.setattr(degrader.images, "load_rgb", lambda p: decoded.append(p) or real_load(p))
    items = list(islice(iter(InfiniteSampler(len(folder), seed=5)), 4 * len(folder)))
    plain = ImageFolder(folder, 16, prep=prep, augment="paper")
    expected = [plain[item] for item in items]
    assert len(decoded) == len(items)
    decoded.clear()
    cached = ImageFolder(folder, 16, prep=prep, augment="paper", cache_mb=64)
    assert all(torch.equal(cached[item], x) for item, x in zip(items, expected, strict=True))
    assert sorted(decoded) == sorted(folder)  # one decode per image, however many crops
    assert cached.cache.hits == len(items) - len(folder)


def test_cache_stays_within_its_budget(folder):
    sizes = {i: Image.open(p).size for i, p in enumerate(folder)}
    budget = 3 * 30 * 30 * 4  # bytes (PIL holds RGB in 4 bytes a pixel): room for a few of the smallest images
    ds = ImageFolder(folder, 16, prep="crop", augment="none", cache_mb=budget / 2**20)
    for item in islice(iter(InfiniteSampler(len(folder), seed=1)), 3 * len(folder)):
        ds[item]
        assert ds.cache.used == sum(w * h * 4 for w, h in (sizes[i] for i in ds.cache.items)) <= budget
    assert 0 < len(ds.cache.items) < len(folder)
    big = ImageFolder(folder, 16, prep="crop", cache_mb=100 / 2**20)  # smaller than any image: nothing kept
    big[(0, 0)]
    assert big.cache.used == 0 and not big.cache.items


def test_make_loader_with_cache_and_workers_gives_the_same_batches(folder):
    kw = dict(batch_size=4, seed=11)
    a = list(islice(make_loader(folder, 16, "crop", "paper", workers=0, **kw), 4))
    b = list(islice(make_loader(folder, 16, "crop", "paper", workers=2, cache_mb=8, **kw), 4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
