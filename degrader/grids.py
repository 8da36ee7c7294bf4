"""PNG grids of images with their row and column captions drawn in the image itself.

Every picture the toolkit writes (training samples, contact sheets, eval and compare grids) goes through
`save_grid`, so a grid read on its own, away from the console that made it, still says what each row and column
is. Captions use Pillow's built-in default font (`ImageFont.load_default()`): nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from degrader.files import atomic_path

MAX_HEADER_LINES = 3  # a column caption wraps onto at most this many lines, then ends in "…"
MAX_LABEL_WIDTH = 160  # pixels: the row-caption band is no wider; longer captions wrap
MAX_CAPTION_WIDTH = 96  # pixels: columns of smaller images widen up to this for their caption


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _line_height(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _width(font, text: str) -> int:
    return int(round(font.getlength(text)))


def _fit(font, text: str, width: int) -> str:
    """`text` cut to `width` pixels, ending in "…" when cut."""
    if _width(font, text) <= width:
        return text
    while text and _width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


def wrap(font, text: str, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap of `text` into lines of at most `width` pixels; words too long are cut by characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if _width(font, candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while _width(font, word) > width and len(word) > 1:  # a single long word: break it where it overflows
            cut = 1
            while cut < len(word) and _width(font, word[: cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], _fit(font, " ".join(lines[max_lines - 1 :]), width)]
    return lines


def grid_image(
    rows: Sequence[torch.Tensor],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale_to: int | None = None,
    pad: int = 2,
) -> Image.Image:
    """Lay image rows out as one RGB image, with a caption band above the columns and left of the rows.

    Args:
        rows: each a (N, 3, h, w) batch (or one (3, h, w) image) in [0, 1]; rows may differ in resolution and N.
        row_labels: one caption per row, drawn in a band on the left; None: no band.
        col_labels: one caption per column, drawn in a band on top; None: no band.
        scale_to: cell height in pixels; default: the largest row height. Rows are enlarged (or reduced)
            with nearest-neighbour so pixels stay visible and rows line up.
        pad: white pixels between cells.

    Raises:
        ValueError: as many labels as rows (or columns) are needed.
    """
    rows = [r.unsqueeze(0) if r.dim() == 3 else r for r in rows]
    n_cols = max(r.shape[0] for r in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) > n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    height = scale_to or max(r.shape[-2] for r in rows)
    cells = []
    for r in rows:
        width = max(1, round(r.shape[-1] * height / r.shape[-2]))
        cells.append(F.interpolate(r.detach().float().cpu().clamp(0, 1), size=(height, width), mode="nearest-exact"))
    font, line_h = _font(), _line_height(_font())
    # A common column grid: narrower cells are centred in it, and columns of small images widen to their caption.
    caption_w = min(max((_width(font, label) for label in col_labels or []), default=0), MAX_CAPTION_WIDTH)
    col_w = max(max(c.shape[-1] for c in cells), caption_w)
    row_text = [wrap(font, label, MAX_LABEL_WIDTH, max(1, height // line_h)) for label in row_labels or []]
    left = max((_width(font, line) for lines in row_text for line in lines), default=-pad) + pad
    col_text = [wrap(font, label, col_w, MAX_HEADER_LINES) for label in col_labels or []]
    top = max((len(lines) for lines in col_text), default=0) * line_h + (pad if col_text else 0)

    grid = torch.ones(3, top + len(cells) * (height + pad) + pad, left + n_cols * (col_w + pad) + pad)
    for i, c in enumerate(cells):
        y = top + pad + i * (height + pad)
        for j, img in enumerate(c):
            x = left + pad + j * (col_w + pad) + (col_w - c.shape[-1]) // 2
            grid[:, y : y + height, x : x + c.shape[-1]] = img
    image = Image.fromarray(grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy(), "RGB")

    draw = ImageDraw.Draw(image)
    for j, lines in enumerate(col_text):
        x0 = left + pad + j * (col_w + pad)
        y = top - len(lines) * line_h  # captions sit on the images: bottom-aligned in the band
        for line in lines:
            draw.text((x0 + (col_w - _width(font, line)) // 2, y), line, fill=(0, 0, 0), font=font)
            y += line_h
    for i, lines in enumerate(row_text):
        y = top + pad + i * (height + pad) + (height - len(lines) * line_h) // 2
        for line in lines:
            draw.text((pad, y), line, fill=(0, 0, 0), font=font)
            y += line_h
    return image


def save_grid(
    rows: Sequence[torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale_to: int | None = None,
    pad: int = 2,
) -> None:
    """Write image rows as one PNG with their captions (see `grid_image`), atomically; parent folders are created."""
    image = grid_image(rows, row_labels=row_labels, col_labels=col_labels, scale_to=scale_to, pad=pad)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def numbered(n: int, prefix: str = "image") -> list[str]:
    """Column captions "image 1" ... "image n"."""
    return [f"{prefix} {i + 1}" for i in range(n)]
