"""`degrade export-shards`, `degrade inspect` and `degrade verify`: paired shards from a degrader, and checks.

Plain click commands; `cli/degrade.py` registers them on the `degrade` group. torch and the library are
imported inside the command bodies so that `--help` answers at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DEVICE_HELP, DEVICES, run_planned, threads_option
from cli.progress import console, progress_bar, user_errors, warn_skipped

SOURCE = click.argument("shards", metavar="SHARDS")
SOURCE_HELP = "SHARDS is a shard directory, a glob, a brace pattern (shard-{000000..000009}.tar) or a pipe: URL."


@click.command("export-shards")
@click.option(
    "--degrader",
    required=True,
    help="A `degrade fit` run dir or .safetensors checkpoint, or bicubic, bilinear, blur-bilinear, realesrgan, bsrgan.",
)
@click.option(
    "--hr", type=click.Path(exists=True, file_okay=False), required=True, help="Folder of HR images (recursive)."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the shards and manifest.")
@click.option("--per-image", type=click.IntRange(min=1), default=1, show_default=True, help="LR variants per crop.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Base seed of every sample.")
@click.option(
    "--samples-per-shard", type=click.IntRange(min=1), default=1000, show_default=True, help="Pairs per tar file."
)
@click.option(
    "--crop",
    type=click.Choice(["center", "random", "grid"]),
    default="center",
    show_default=True,
    help="center: resize + centre crop as `degrade fit` does; random: one native-resolution crop per image; "
    "grid: every non-overlapping crop (large non-face images).",
)
@click.option(
    "--crops-per-image",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="--crop random: crops cut from each image, all from one decode (large photos).",
)
@click.option(
    "--hr-size", type=click.IntRange(min=4), default=None, help="HR crop side [the degrader's; 64 for classical]."
)
@click.option("--scale", type=click.IntRange(min=2), default=None, help="Classical degraders only [4].")
@click.option(
    "--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Decode / PNG-encode processes."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Crops per call.")
@click.option(
    "--png-level",
    type=click.IntRange(0, 9),
    default=3,
    show_default=True,
    help="zlib level of the PNGs (lossless either way): 0 writes fastest, 46% more bytes (benchmarks/README.md).",
)
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@threads_option(record=False)
@click.option("--resume", is_flag=True, help="Continue an interrupted export in --out.")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds.")
@click.option("--dry-run", is_flag=True, help="Check the inputs and print the plan; write nothing.")
def export_shards(dry_run: bool, **options) -> None:
    """Degrade every HR image into paired (seed, LR, HR) WebDataset shards.

    
    Example:
      degrade export-shards --degrader runs/degrader --hr faces-hr --out shards --per-image 4
    """
    from degrader.export import ExportConfig, export_shards, plan_export

    config = ExportConfig(**options)

    def describe(plan) -> None:
        warn_skipped("--hr", plan.scan.skipped)
        d = plan.degrader
        console.print(
            f"{len(plan.scan.paths)} images -> {plan.crops} {plan.recorded['hr_size']}px crops ({config.crop}) x "
            f"{config.per_image} = {plan.samples} pairs in {plan.shards} shards, degrader {d.name} (x{d.scale})"
            + (f", weights {d.file.name} from step {d.step}" if getattr(d, "file", None) else "")  # best or last
        )

    manifest = run_planned(
        plan_export,
        export_shards,
        config,
        dry_run,
        describe=describe,
        progress=lambda plan: progress_bar("export", plan.samples, unit="pair"),
        nothing="written",
        interrupted="the finished shards are kept. Continue with --resume.",
    )
    if manifest is None:
        return
    t = manifest["totals"]
    if t["samples"] == 0:  # every image failed to decode after the scan: not a success
        first = manifest["skipped"][0] if manifest["skipped"] else {"path": "?", "reason": "?"}
        raise click.ClickException(
            f"--hr {config.hr}: no image could be used ({t['skipped']} skipped, e.g. {first['path']}: "
            f"{first['reason']}); wrote no pairs. {Path(config.out) / 'manifest.json'} lists them all."
        )
    console.print(f"wrote {t['samples']} pairs in {t['shards']} shards to {config.out} (manifest.json)")


@click.command("inspect", epilog=SOURCE_HELP)
@SOURCE
@click.option(
    "--contact-sheet", type=click.Path(dir_okay=False), default=None, help="Write a PNG of the first samples."
)
@click.option("--examples", type=click.IntRange(min=1, max=64), default=8, show_default=True, help="Sheet columns.")
def inspect(shards: str, contact_sheet: str | None, examples: int) -> None:
    """Summarize paired shards: counts, degrader, seeds, sizes.

    
    Example:
      degrade inspect shards --contact-sheet sheet.png
    """
    from rich.table import Table

    from degrader.shards import summarize_shards

    with user_errors():
        s = summarize_shards(shards, examples=examples if contact_sheet else 0)
    table = Table(show_header=False, box=None)
    table.add_row("shards", str(s["shards"]))
    table.add_row("samples", str(s["samples"]))
    table.add_row("source images", str(s["sources"]))
    for name, sha in s["degraders"]:
        table.add_row("degrader", f"{name} {sha[:12] if sha else '(classical, no weights)'}")
    table.add_row("seeds", f"{s['seed_min']} .. {s['seed_max']} ({s['unique_seeds']} distinct)")
    table.add_row("HR sizes", ", ".join("x".join(map(str, hw)) for hw in s["hr_sizes"]))
    table.add_row("LR sizes", ", ".join("x".join(map(str, hw)) for hw in s["lr_sizes"]))
    if s["manifest"]:
        m = s["manifest"]
        c = m["config"]
        table.add_row("export", f"crop {c['crop']}, {c['per_image']} per image, seed {c['seed']}, v{m['version']}")
        table.add_row("skipped inputs", str(len(m["skipped"])))
    console.print(table)
    if contact_sheet and s["examples"]:
        import torch

        from degrader.images import save_grid

        lq = torch.stack([e["lq"] for e in s["examples"]])
        gt = torch.stack([e["gt"] for e in s["examples"]])
        with user_errors():
            keys = [e["key"] for e in s["examples"]]
            save_grid([lq, gt], Path(contact_sheet), row_labels=["LR", "HR"], col_labels=keys)
        console.print(f"contact sheet (top: LR, bottom: HR): {contact_sheet}")


@click.command("verify", epilog=SOURCE_HELP)
@SOURCE
def verify(shards: str) -> None:
    """Check every checksum and decode every sample; exit non-zero on any fault.

    
    Example:
      degrade verify shards
    """
    from degrader.shards import verify_shards

    with user_errors():
        faults = verify_shards(shards)
    for fault in faults:
        console.print(f"[red]fault:[/] {fault}")
    if faults:
        raise click.ClickException(f"{len(faults)} fault(s) in {shards}; re-export the shards named above.")
    console.print(f"[green]ok:[/] {shards}: every checksum matches and every sample decodes.")
