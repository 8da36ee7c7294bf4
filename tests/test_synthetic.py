"""Tests for degrader.synthetic: procedural faces, the camera degradation and the demo data set."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from degrader import synthetic
from degrader.errors import UserError
from degrader.images import scan_images
from degrader.synthetic import camera_degrade, make_faces, write_demo_data


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.float64)


def test_faces_are_deterministic_sized_and_detailed():
    a, b = make_faces(5, 48, seed=3), make_faces(5, 48, seed=3)
    assert all(x.mode == "RGB" and x.size == (48, 48) for x in a)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert len({x.tobytes() for x in a}) == 5
    assert not {x.tobytes() for x in a} & {x.tobytes() for x in make_faces(5, 48, seed=4)}
    assert make_faces(3, 48, seed=3)[2].tobytes() == a[2].tobytes()  # image i depends on (seed, i) only
    # Fine detail: the images change noticeably under a light blur (a flat cartoon would not).
    detail = [np.abs(arr(x) - arr(x.filter(ImageFilter.GaussianBlur(1)))).mean() for x in a]
    assert min(detail) > 2.0


def test_camera_degrade_size_determinism_and_noise():
    face = make_faces(1, 64, seed=0)[0]
    out = camera_degrade(face, 4, random.Random(5))
    assert out.mode == "RGB" and out.size == (16, 16)
    assert out.tobytes() == camera_degrade(face, 4, random.Random(5)).tobytes()
    assert out.tobytes() != camera_degrade(face, 4, random.Random(6)).tobytes()
    assert camera_degrade(make_faces(1, 96, seed=0)[0], 3, random.Random(0)).size == (32, 32)
    # A flat image stays flat under bicubic; the camera adds noise and blocks.
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    assert arr(flat.resize((16, 16), Image.Resampling.BICUBIC)).std() == 0
    assert min(arr(camera_degrade(flat, 4, random.Random(s))).std() for s in range(8)) > 1.5


def test_camera_degrade_differs_from_bicubic_and_blurs_edges():
    faces = make_faces(8, 64, seed=1)
    gaps = [
        np.abs(arr(camera_degrade(f, 4, random.Random(i))) - arr(f.resize((16, 16), Image.Resampling.BICUBIC))).mean()
        for i, f in enumerate(faces)
    ]
    assert min(gaps) > 8.0

    def edge_width(img: Image.Image) -> int:  # LR columns inside the 10-90% transition of a step edge
        p = arr(img).mean(axis=(0, 2))
        p = (p - p.min()) / (p.max() - p.min())
        return int(((p > 0.1) & (p < 0.9)).sum())

    step = np.zeros((64, 64, 3), dtype=np.uint8)
    step[:, 32:] = 255
    step = Image.fromarray(step)
    sharp = edge_width(step.resize((16, 16), Image.Resampling.BICUBIC))
    blurred = np.mean([edge_width(camera_degrade(step, 4, random.Random(s))) for s in range(10)])
    assert blurred > sharp + 0.5  # without the optics blur this is 0


def test_write_demo_data(tmp_path):
    root = tmp_path / "demo"
    hr, lr, held, held_hr = write_demo_data(root, n_hr=6, n_lr=5, hr_size=32, scale=4, seed=2)
    assert (hr, lr, held, held_hr) == (root / "hr", root / "lr", root / "heldout_lr", root / "heldout_hr")
    assert [len(scan_images(d).paths) for d in (hr, lr, held)] == [6, 5, 8]
    assert {Image.open(p).size for p in hr.iterdir()} == {(32, 32)}
    assert {Image.open(p).size for d in (lr, held) for p in d.iterdir()} == {(8, 8)}
    assert sorted(p.name for p in root.iterdir()) == ["demo.json", "heldout_hr", "heldout_lr", "hr", "lr"]  # no temps
    # The held-out HR faces are the clean sources of the held-out LR faces, under the same names.
    assert sorted(p.name for p in held_hr.iterdir()) == sorted(p.name for p in held.iterdir())
    assert [Image.open(p).tobytes() for p in sorted(held_hr.iterdir())] == [
        f.tobytes() for f in make_faces(8, 32, synthetic._seed("heldout", 2))
    ]

    # The LR faces are different people: none of their clean sources is among the HR faces.
    hr_faces = {Image.open(p).convert("RGB").tobytes() for p in hr.iterdir()}
    assert hr_faces == {f.tobytes() for f in make_faces(6, 32, synthetic._seed("hr", 2))}
    lr_sources = make_faces(5, 32, synthetic._seed("lr", 2)) + make_faces(8, 32, synthetic._seed("heldout", 2))
    assert not hr_faces & {f.tobytes() for f in lr_sources}

    # Same arguments elsewhere give the same bytes; a second call reuses; other arguments are refused.
    again = write_demo_data(tmp_path / "demo2", n_hr=6, n_lr=5, hr_size=32, scale=4, seed=2)
    for a, b in zip((hr, lr, held, held_hr), again, strict=True):
        assert [p.read_bytes() for p in sorted(a.iterdir())] == [p.read_bytes() for p in sorted(b.iterdir())]
    mtime = (lr / "00000.png").stat().st_mtime_ns
    assert write_demo_data(root, n_hr=6, n_lr=5, hr_size=32, scale=4, seed=2) == (hr, lr, held, held_hr)
    assert (lr / "00000.png").stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="already exists"):
        write_demo_data(root, n_hr=6, n_lr=5, hr_size=32, scale=4, seed=3)
