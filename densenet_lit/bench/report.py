"""The suite's results as Markdown: header, one table per section, and the GPU targets.

Rows are the plain dicts the suite writes to JSON; a measured value is a number, or the
``"n/a (reason)"`` text of what failed, which a cell shows as it is."""

from __future__ import annotations

import statistics

from densenet_lit.bench.common import NA
from densenet_lit.bench.config import MODES, ModelSpec, Settings, model_specs
from densenet_lit.bench.loaders import DEVICE_DECODE_PIPELINE
from densenet_lit.bench.steps import LIGHTNING, PLAIN, PLAIN_OURS
from densenet_lit.callbacks import default_callbacks
from densenet_lit.markdown import table_lines
from densenet_lit.models import DEEPEST_MEMORY_LEVEL

# (mode, at most this fraction of fp32's memory, at no more than this many times its step
# time); the deepest level: the 0.30x of the authors' most frugal level at 1.3x time.
MEMORY_TARGETS = (
    ("memory_efficient", 0.5, 1.25),
    (f"memory_efficient={DEEPEST_MEMORY_LEVEL}", 0.3, 1.3),
)
LOADER_RATIO_TARGET = 0.95  # epoch images/s over step-alone images/s: the loader keeps up
BUSY_TARGET = 0.95  # the "GPU busy > 95% of a CIFAR epoch"
DECODE_TARGET = 5000.0  # images/s of ImageNet decoding + augmentation on one H100
OVERHEAD_TARGET = "Lightning step >= plain loop in every mode (overhead < 3%)"
LOADER_TARGET = (
    f"CIFAR loader never the bottleneck (epoch >= {LOADER_RATIO_TARGET:.2f}x step alone)"
)
BUSY_TARGET_TEXT = "GPU busy > 95% of a CIFAR epoch (launch-bound steps stay below it)"
DECODE_TARGET_TEXT = (
    f"ImageNet JPEG decoding + augmentation on the device >= {DECODE_TARGET:,.0f} img/s (one H100)"
)


def loader_keeps_up(vs_step: float | None) -> bool | None:
    """The loader is not the bottleneck when the epoch runs at >= 0.95x the step alone.

    This, not GPU busy, decides the loader target: an eager DenseNet-BC-100 step at batch 64
    is bound by kernel launches, so the GPU idles between kernels even with a free loader.
    """
    return None if vs_step is None else vs_step >= LOADER_RATIO_TARGET


def num(value, digits: int = 1) -> str:
    """A number as a cell; an "n/a (reason)" text as it is; None as n/a."""
    if not isinstance(value, float | int):
        return NA if value is None else str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def over(a, b) -> float | None:
    """``a / b`` where both were measured, else None."""
    ok = all(isinstance(v, float | int) and v for v in (a, b))
    return a / b if ok else None


def ips(row: dict, runner: str):
    """A runner's images/s in a step row: a number, its error's text, or None (not run)."""
    run = row["runs"].get(runner)
    return run["images_per_s"] if isinstance(run, dict) else run


def memory_label(settings: Settings) -> str:
    return "peak MiB" if settings.cuda else "activation MiB"


def step_section(spec: ModelSpec, rows: list[dict], settings: Settings) -> list[str]:
    """A network's table: each mode's runners side by side, their ratios, against fp32."""
    ours = [PLAIN_OURS] if any(PLAIN_OURS in r["runs"] for r in rows) else []
    mem = memory_label(settings)
    head = ["mode", "plain loop img/s", *["plain loop, our net img/s"] * bool(ours)]
    head += ["Lightning img/s", "Lightning / plain", *["Lightning / plain, our net"] * bool(ours)]
    head += ["Lightning vs fp32", f"{mem} plain", f"{mem} Lightning", "memory vs fp32"]
    head += ["first step s (plain / Lightning)"]
    fp32 = next((r for r in rows if r["mode"] == "fp32"), {"runs": {}, "memory_mib": {}})
    body = []
    for row in rows:
        memory, lightning = row["memory_mib"], ips(row, LIGHTNING)
        star = " *" if not settings.cuda and MODES[row["mode"]].compile else ""  # eager graph's
        cells = [row["mode"], *(num(ips(row, k)) for k in (PLAIN, *ours, LIGHTNING))]
        cells += [ratio(over(lightning, ips(row, k))) for k in (PLAIN, *ours)]
        cells.append(ratio(over(lightning, ips(fp32, LIGHTNING))))
        for k in (PLAIN, LIGHTNING):
            cells.append(num(memory.get(k)) + star * isinstance(memory.get(k), float))
        cells.append(ratio(over(memory.get(LIGHTNING), fp32["memory_mib"].get(LIGHTNING))))
        runs = [row["runs"].get(k) for k in (PLAIN, LIGHTNING)]
        firsts = [r["first_step_s"] if isinstance(r, dict) else None for r in runs]
        body.append([*cells, " / ".join(num(f, 2) for f in firsts)])
    batch = rows[0]["batch"] if rows else settings.batch(spec.key)
    title = [f"### {spec.title}, batch {batch}", "", f"Plain loop: {spec.baseline_name}.", ""]
    return title + table_lines(head, body)


def loader_section(rows: list[dict]) -> list[str]:
    keys = ["loader", "pipeline", "workers", "batch"]
    body = [[*(r[k] for k in keys), num(r["images_per_s"])] for r in rows]
    return table_lines([*keys, "img/s"], body)


def busy_cell(row: dict) -> str:
    busy = row.get("busy")
    return f"{100 * busy:.1f}% ({row['busy_batches']} batches)" if isinstance(busy, float) else busy


def epoch_section(rows: list[dict]) -> list[str]:
    head = ["pipeline", "mode", "workers", "batches x batch", "time s", "img/s", "vs step alone"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["pipeline"], r["mode"], "", "", "", r["error"], "", ""])
            continue
        size, times = (
            f"{r['batches']} x {r['batch']}",
            [num(r["seconds"], 2), num(r["images_per_s"])],
        )
        body.append(
            [
                r["pipeline"],
                r["mode"],
                r["workers"],
                size,
                *times,
                ratio(r["vs_step"]),
                busy_cell(r),
            ]
        )
    return table_lines([*head, "GPU busy"], body)


def targets(
    steps: dict,
    epochs: list[dict],
    specs: dict[str, ModelSpec],
    settings: Settings,
    loaders: list[dict] = (),
) -> list[list[str]]:
    """The issue's GPU targets, each with what this run measured and the verdict."""
    out: list[list[str]] = []
    verdict = ("met", "NOT met") if settings.cuda else ("not judged (CPU run; GPU target)",) * 2

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append([target, measured, NA if ok is None else verdict[not ok]])

    ratios = [
        (r, f"{specs[key].short} {row['mode']}")
        for key, rows in steps.items()
        for row in rows
        if (r := over(ips(row, LIGHTNING), ips(row, PLAIN)))
    ]
    if ratios:
        (worst, where), med = min(ratios), statistics.median([r for r, _ in ratios])
        measured = f"worst Lightning / plain {worst:.2f}x ({where}); median {med:.2f}x over "
        add(OVERHEAD_TARGET, f"{measured}{len(ratios)} cases", worst >= 0.97)
    for key, rows in steps.items():
        by_mode = {r["mode"]: r for r in rows}
        name, none = specs[key].short, {"runs": {}, "memory_mib": {}}
        fp32 = by_mode.get("fp32", none)
        if fast := over(ips(by_mode.get("fast", none), LIGHTNING), ips(fp32, LIGHTNING)):
            add(f"{name}: fast mode >= 2x fp32 eager", f"{fast:.2f}x", fast >= 2)
        for mode, max_mem, max_slow in MEMORY_TARGETS:
            eff = by_mode.get(mode, none)
            mem = over(eff["memory_mib"].get(LIGHTNING), fp32["memory_mib"].get(LIGHTNING))
            if mem and (slow := over(ips(fp32, LIGHTNING), ips(eff, LIGHTNING))):
                target = f"{name}: {mode} <= {max_mem}x memory at <= {max_slow}x time"
                measured = f"{mem:.2f}x {memory_label(settings)}, {slow:.2f}x time per step"
                add(target, measured, mem <= max_mem and slow <= max_slow)
    for row in [r for r in epochs if "error" not in r and r["pipeline"].startswith("ours")]:
        vs, busy = row["vs_step"], row["busy"]
        measured = f"epoch / step-alone images/s {ratio(vs)} ({row['mode']})"
        if vs is None:
            measured += f"; no step-alone {row['mode']} figure (run the steps section too)"
        add(LOADER_TARGET, measured, loader_keeps_up(vs))
        if settings.cuda and isinstance(busy, float):
            add(BUSY_TARGET_TEXT, f"{100 * busy:.1f}% ({row['mode']})", busy > BUSY_TARGET)
        elif settings.cuda:
            add(BUSY_TARGET_TEXT, busy, None)
    decode_only = DEVICE_DECODE_PIPELINE.split("{")[0]
    for row in loaders:
        value = row["images_per_s"]
        if row["pipeline"].startswith(decode_only) and isinstance(value, float):
            measured = f"{value:,.0f} img/s (batches of {row['batch']})"
            add(DECODE_TARGET_TEXT, measured, value >= DECODE_TARGET)
    return out


STEP_TEXT = (
    "Images/s of forward + loss + backward + SGD-Nesterov update on a batch already on the "
    "device. Lightning: `DenseNetModule` in `Trainer` with the CLI's default callbacks ({}) and "
    "its CSV logger. Memory: {}. Ratios above 1x mean faster (or, for memory, more). Modes: {}. "
    "First step: compilation included (a run may reuse code torch.compile made earlier in this "
    "process)."
)
PEAK = "`torch.cuda.max_memory_allocated` over the timed steps"
SAVED = (
    "the bytes the autograd graph saves for backward (`*`: compile modes show the eager graph's)"
)
LOADER_TEXT = (
    "Images/s delivered on the device, augmentation included; synthetic data in the real file "
    "formats, digits real (see docs/benchmarks.md)."
)
EPOCH_TEXT = (
    "Loader plus training step over {} (after warm-up), network {}. 'vs step alone' divides by "
    "the same side's step-only images/s in the same mode; GPU busy: CUDA kernel time that "
    "torch.profiler records over a window of batches (left out of img/s), over its wall time."
)


def render(results: dict) -> str:
    """The report: the environment, a table per section, the targets."""
    s, steps, loaders, epochs = (results[k] for k in ("settings", "steps", "loaders", "epochs"))
    specs = model_specs(s.quick)
    lines = [
        "## densenet_lit benchmark",
        "",
        *(f"- {k}: {v}" for k, v in results["environment"].items()),
    ]
    lines += [
        f"- command: `{results['command']}`",
        f"- suite wall time: {(results['elapsed_s'] or 0.0) / 60:.1f} min",
        f"- timing: {s.warmup} warm-up steps, then {s.windows} windows of {s.steps} steps "
        f"(median window), {s.rounds} round(s) of plain and Lightning alternating",
        *(f"- note: {n}" for n in s.notes),
        "",
    ]
    if steps:
        callbacks = ", ".join(f"`{type(c).__name__}`" for c in default_callbacks())
        modes = {r["mode"] for rows in steps.values() for r in rows}
        legend = "; ".join(f"{m.name} = {m.label}" for m in MODES.values() if m.name in modes)
        text = STEP_TEXT.format(callbacks, PEAK if s.cuda else SAVED, legend)
        lines += ["### Training step", "", text, ""]
        for key, rows in steps.items():
            lines += [*step_section(specs[key], rows, s), ""]
    if loaders:
        lines += ["### Data loaders alone", "", LOADER_TEXT, "", *loader_section(loaders), ""]
    if epochs:
        n = s.epoch_batches
        span = f"the first {n} batches of an epoch" if n else "the whole epoch"
        text = EPOCH_TEXT.format(span, specs["cifar"].title)
        lines += ["### CIFAR-10 epoch, end to end", "", text, "", *epoch_section(epochs), ""]
    if rows := targets(steps, epochs, specs, s, loaders):
        lines += ["### Targets (set for a GPU)", ""]
        lines += [*table_lines(["target", "measured", "verdict"], rows), ""]
    return "\n".join(lines)
