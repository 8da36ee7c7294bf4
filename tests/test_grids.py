"""PNG grids: captions drawn in the image (header band above the columns, band left of the rows), sizes follow;
`degrade sample` (the paper's Fig. 3)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.sample import sample
from degrader.checkpoint import DEGRADER_FILE, Degrader
from degrader.classical import Bicubic
from degrader.grids import MAX_HEADER_LINES, _font, _line_height, _width, grid_image, save_grid, wrap
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.seed_grid import SampleConfig, sample_grid

PAD = 2


def rows_of(n_rows: int = 2, n: int = 3, size: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, size, size, generator=gen) for _ in range(n_rows)]


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_without_captions_the_grid_is_cells_and_padding_only(tmp_path):
    rows = rows_of()
    path = tmp_path / "deep" / "grid.png"
    save_grid(rows, path)
    g = np.asarray(Image.open(path))
    assert g.shape == (2 * 8 + 3 * PAD, 3 * (8 + PAD) + PAD, 3)
    expected = (rows[1][2].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    y, x = 2 * PAD + 8, 3 * PAD + 2 * 8
    assert (g[y : y + 8, x : x + 8] == expected).all()
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # written atomically, nothing left over


def test_column_captions_add_a_header_band_that_holds_text_and_shift_the_cells():
    rows = rows_of(size=48)
    plain = array(grid_image(rows))
    captioned = array(grid_image(rows, col_labels=["LR", "bicubic", "SR"]))
    band = captioned.shape[0] - plain.shape[0]
    assert band == _line_height(_font()) + PAD  # one line of text, plus a gap
    assert captioned.shape[1] == plain.shape[1]
    assert (captioned[band:] == plain).all()  # the images are untouched, only moved down
    header = captioned[:band]
    for j in range(3):  # text in the header above every column
        x0 = PAD + j * (48 + PAD)
        assert (header[:, x0 : x0 + 48] < 128).any()
    other = array(grid_image(rows, col_labels=["HR", "bicubic", "SR"]))
    assert (other[:band] != header).any() and (other[band:] == plain).all()  # the caption is what differs


def test_row_captions_add_a_left_band_as_wide_as_the_longest_caption():
    rows = rows_of()
    plain = array(grid_image(rows))
    labels = ["HR", "real LR (unpaired)"]
    captioned = array(grid_image(rows, row_labels=labels))
    band = captioned.shape[1] - plain.shape[1]
    assert band == max(_width(_font(), label) for label in labels) + PAD
    assert captioned.shape[0] == plain.shape[0]
    assert (captioned[:, band:] == plain).all()
    for i in range(2):  # text left of each row
        y0 = PAD + i * (8 + PAD)
        assert (captioned[y0 : y0 + 8, :band] < 128).any()


def test_long_captions_wrap_and_the_header_grows_with_them():
    font = _font()
    lines = wrap(font, "SR trained on blur-bilinear shards", 40, 10)
    assert len(lines) > 1 and all(_width(font, line) <= 40 for line in lines)
    assert " ".join(lines).replace(" ", "") == "SRtrainedonblur-bilinearshards"  # nothing lost when it fits
    cut = wrap(font, "a very long caption that cannot possibly fit in three short lines", 30, MAX_HEADER_LINES)
    assert len(cut) == MAX_HEADER_LINES and cut[-1].endswith("…")
    rows = rows_of(size=100)  # wider than any caption: columns keep the images' width
    one = grid_image(rows, col_labels=["a", "b", "c"])
    many = grid_image(rows, col_labels=["a", "b", "SR trained on shards from the learned degrader run deg-small-400"])
    assert many.height - one.height == (MAX_HEADER_LINES - 1) * _line_height(font)
    assert many.width == one.width


def test_rows_of_other_shapes_share_one_column_grid():
    wide = torch.zeros(2, 3, 4, 8)  # (h, w) = (4, 8): 16 px wide at 8 px height
    square = torch.ones(2, 3, 8, 8)
    g = array(grid_image([square, wide], col_labels=["x", "y"]))
    top = _line_height(_font()) + PAD
    assert g.shape[1] == PAD + 2 * (16 + PAD)
    y = top + PAD  # the square row: 8 px cells centred in 16 px columns, white on either side
    assert (g[y : y + 8, PAD + 4 : PAD + 12] == 255).all() and (g[y : y + 8, PAD : PAD + 4] == 255).all()
    y = top + 2 * PAD + 8  # the wide row fills its columns
    assert (g[y : y + 8, PAD : PAD + 16] == 0).all()


def test_columns_of_small_images_widen_to_their_caption():
    rows = rows_of(size=8)
    labels = ["LR", "bicubic", "SR"]
    g = grid_image(rows, col_labels=labels)
    col_w = max(_width(_font(), label) for label in labels)
    assert col_w > 8 and g.width == PAD + 3 * (col_w + PAD)
    assert g.height == _line_height(_font()) + PAD + 2 * 8 + 3 * PAD  # each caption on one line


def test_caption_counts_are_checked():
    with pytest.raises(ValueError, match="row labels"):
        grid_image(rows_of(), row_labels=["only one"])
    with pytest.raises(ValueError, match="column labels"):
        grid_image(rows_of(), col_labels=["a", "b", "c", "d"])


# ------------------------------------------------------------------------------------------------ degrade sample


@pytest.fixture
def learned(tmp_path) -> Path:
    """A tiny untrained degrader whose output depends on the noise seed."""
    torch.manual_seed(0)
    net = HighToLowGenerator(HighToLowConfig(z_dim=8, width=8, blocks_per_group=1, residual=True, d_width=8))
    torch.nn.init.normal_(net.tail.conv.weight, std=0.05)
    run = tmp_path / "deg"
    run.mkdir()
    Degrader(net).save(run / DEGRADER_FILE)
    return run


def cell(grid: np.ndarray, rows: int, cols: int, i: int, j: int, size: int = 64) -> np.ndarray:
    """Cell (i, j) of a captioned grid, found from the bottom-right corner (the caption bands are top and left)."""
    top, left = grid.shape[0] - (PAD + rows * (size + PAD)), grid.shape[1] - (PAD + cols * (size + PAD))
    y, x = top + PAD + i * (size + PAD), left + PAD + j * (size + PAD)
    return grid[y : y + size, x : x + size]


def test_degrade_sample_rows_are_images_and_columns_hr_bicubic_and_seeds(learned, make_images, tmp_path):
    make_images(tmp_path / "hr", 3, 64)
    out = tmp_path / "fig3.png"
    sample_grid(SampleConfig(degrader=str(learned), hr=str(tmp_path / "hr"), out=str(out), seeds=3, n=5, device="cpu"))
    grid = np.asarray(Image.open(out))
    rows, cols = 3, 2 + 3  # only 3 HR images; HR, bicubic, 3 seeds
    top, left = grid.shape[0] - (PAD + rows * 66), grid.shape[1] - (PAD + cols * 66)
    assert top == _line_height(_font()) + PAD and left == _width(_font(), "002.png") + PAD  # captions: names
    assert (grid[:top, left:] < 128).any() and (grid[top:, :left] < 128).any()
    hr = np.array(Image.open(tmp_path / "hr" / "001.png"))
    assert (cell(grid, rows, cols, 1, 0) == hr).all()
    bicubic = Bicubic(4).degrade(torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255, [0])
    assert (cell(grid, rows, cols, 1, 1)[::4, ::4] == (bicubic[0].permute(1, 2, 0) * 255).round().numpy()).all()
    seeds = [cell(grid, rows, cols, 1, j) for j in (2, 3, 4)]
    assert (seeds[0] != seeds[1]).any() and (seeds[1] != seeds[2]).any()  # each seed its own degradation
    first = out.read_bytes()
    sample_grid(SampleConfig(degrader=str(learned), hr=str(tmp_path / "hr"), out=str(out), seeds=3, n=5, device="cpu"))
    assert out.read_bytes() == first  # seeded: the same picture


def test_degrade_sample_cli(make_images, tmp_path):
    make_images(tmp_path / "hr", 2, 64)
    out = tmp_path / "grid.png"
    args = ["--hr", str(tmp_path / "hr"), "--out", str(out), "--seeds", "2", "--device", "cpu"]
    result = CliRunner().invoke(sample, ["--degrader", "blur-bilinear", *args])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 4 * 66 and str(out) in result.output.replace("\n", "")
    bad = CliRunner().invoke(sample, ["--degrader", "no-such-run", *args, "--overwrite"])  # out exists now
    assert bad.exit_code == 1 and "no-such-run" in bad.output and "Traceback" not in bad.output
