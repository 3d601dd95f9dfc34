"""The suite's results as Markdown: header, one table per section, and the GPU targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from densenet_lit.bench.config import MODES, ModelSpec, Settings, model_specs
from densenet_lit.bench.epoch import EpochRow
from densenet_lit.bench.loaders import DEVICE_DECODE_PIPELINE, LoaderRow
from densenet_lit.bench.steps import LIGHTNING, PLAIN, PLAIN_OURS, StepRow
from densenet_lit.callbacks import default_callbacks
from densenet_lit.markdown import table_lines
from densenet_lit.models import DEEPEST_MEMORY_LEVEL

# (mode, at most this fraction of fp32's memory, at no more than this many times its step
# time); the deepest level: the 0.30x of the authors' most frugal level at 1.3x time.
MEMORY_TARGETS = (
    ("memory_efficient", 0.5, 1.25),
    (f"memory_efficient={DEEPEST_MEMORY_LEVEL}", 0.3, 1.3),
)
NA = "n/a"
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


@dataclass
class Results:
    """Everything measured so far: ``<name>.partial.json`` after every row (a run killed at a
    time limit leaves its numbers), ``<name>.json`` at the end."""

    command: str
    settings: Settings
    environment: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[StepRow]] = field(default_factory=dict)
    loaders: list[LoaderRow] = field(default_factory=list)
    epochs: list[EpochRow] = field(default_factory=list)
    elapsed_s: float | None = None
    complete: bool = False  # False in a partial file: the run had not finished
    error: str | None = None  # what stopped the run early, if anything did


def loader_keeps_up(vs_step: float | None) -> bool | None:
    """The loader is not the bottleneck when the epoch runs at >= 0.95x the step alone.

    This, not GPU busy, decides the loader target: an eager DenseNet-BC-100 step at batch 64
    is bound by kernel launches, so the GPU idles between kernels even with a free loader.
    """
    return None if vs_step is None else vs_step >= LOADER_RATIO_TARGET


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return NA
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def over(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def cell(value: str, error: str | None) -> str:
    return f"{NA} ({error})" if error else value


def memory_label(settings: Settings) -> str:
    return "peak MiB" if settings.cuda else "activation MiB"


def step_section(spec: ModelSpec, rows: list[StepRow], settings: Settings) -> list[str]:
    ours = [PLAIN_OURS] if any(PLAIN_OURS in r.runs or PLAIN_OURS in r.errors for r in rows) else []
    mem = memory_label(settings)
    head = ["mode", "plain loop img/s", *["plain loop, our net img/s"] * bool(ours)]
    head += ["Lightning img/s", "Lightning / plain", *["Lightning / plain, our net"] * bool(ours)]
    head += ["Lightning vs fp32", f"{mem} plain", f"{mem} Lightning", "memory vs fp32"]
    fp32 = next((r for r in rows if r.mode == "fp32"), StepRow("", "", 0))
    body = []
    for row in rows:
        cells = [
            row.mode,
            *(cell(num(row.ips(k)), row.errors.get(k)) for k in (PLAIN, *ours, LIGHTNING)),
        ]
        cells += [ratio(row.ratio(LIGHTNING, k)) for k in (PLAIN, *ours)]
        cells.append(ratio(over(row.ips(LIGHTNING), fp32.ips(LIGHTNING))))
        star = " *" if not settings.cuda and MODES[row.mode].compile else ""  # eager graph's
        for k in (PLAIN, LIGHTNING):
            value = row.memory_mib.get(k)
            cells.append(cell(num(value) + star * (value is not None), row.memory_errors.get(k)))
        cells.append(ratio(over(row.memory_mib.get(LIGHTNING), fp32.memory_mib.get(LIGHTNING))))
        firsts = [row.runs[k].first_step_s if k in row.runs else None for k in (PLAIN, LIGHTNING)]
        body.append([*cells, " / ".join(num(f, 2) for f in firsts)])
    batch = rows[0].batch if rows else settings.batch(spec.key)
    title = [f"### {spec.title}, batch {batch}", "", f"Plain loop: {spec.baseline_name}.", ""]
    return title + table_lines([*head, "first step s (plain / Lightning)"], body)


def loader_section(rows: list[LoaderRow]) -> list[str]:
    body = [
        [r.loader, r.pipeline, r.workers, r.batch, cell(num(r.images_per_s), r.error)] for r in rows
    ]
    return table_lines(["loader", "pipeline", "workers", "batch", "img/s"], body)


def epoch_section(rows: list[EpochRow], settings: Settings) -> list[str]:
    head = ["pipeline", "mode", "workers", "batches x batch", "time s", "img/s", "vs step alone"]
    body = []
    for row in rows:
        if (r := row.result) is None:
            body.append([row.pipeline, row.mode, "", "", "", cell("", row.error), "", ""])
            continue
        busy = f"{NA} (CPU)" if not settings.cuda else f"{NA} ({r.busy_error or 'not profiled'})"
        if r.busy is not None:
            busy = f"{100 * r.busy:.1f}% ({r.busy_batches} batches)"
        size, times = f"{r.batches} x {r.batch}", [num(r.seconds, 2), num(r.images_per_s)]
        body.append([r.pipeline, r.mode, r.workers, size, *times, ratio(row.vs_step), busy])
    return table_lines([*head, "GPU busy"], body)


def targets(
    steps: dict[str, list[StepRow]],
    epochs: list[EpochRow],
    specs: dict[str, ModelSpec],
    settings: Settings,
    loaders: list[LoaderRow] = (),
) -> list[list[str]]:
    """The issue's GPU targets, each with what this run measured and the verdict."""
    out: list[list[str]] = []
    verdict = ("met", "NOT met") if settings.cuda else ("not judged (CPU run; GPU target)",) * 2

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append([target, measured, NA if ok is None else verdict[not ok]])

    ratios = [
        (row.ratio(LIGHTNING, PLAIN), f"{specs[key].short} {row.mode}")
        for key, rows in steps.items()
        for row in rows
        if row.ratio(LIGHTNING, PLAIN)
    ]
    if ratios:
        (worst, where), med = min(ratios), statistics.median([r for r, _ in ratios])
        measured = f"worst Lightning / plain {worst:.2f}x ({where}); median {med:.2f}x over "
        add(OVERHEAD_TARGET, f"{measured}{len(ratios)} cases", worst >= 0.97)
    for key, rows in steps.items():
        name, by_mode, none = specs[key].short, {r.mode: r for r in rows}, StepRow("", "", 0)
        fp32 = by_mode.get("fp32", none)
        if fast := over(by_mode.get("fast", none).ips(LIGHTNING), fp32.ips(LIGHTNING)):
            add(f"{name}: fast mode >= 2x fp32 eager", f"{fast:.2f}x", fast >= 2)
        for mode, max_mem, max_slow in MEMORY_TARGETS:
            eff = by_mode.get(mode, none)
            mem = over(eff.memory_mib.get(LIGHTNING), fp32.memory_mib.get(LIGHTNING))
            if mem and (slow := over(fp32.ips(LIGHTNING), eff.ips(LIGHTNING))):
                target = f"{name}: {mode} <= {max_mem}x memory at <= {max_slow}x time"
                measured = f"{mem:.2f}x {memory_label(settings)}, {slow:.2f}x time per step"
                add(target, measured, mem <= max_mem and slow <= max_slow)
    for row in [row for row in epochs if row.result and row.pipeline.startswith("ours")]:
        r, vs = row.result, row.vs_step
        measured = f"epoch / step-alone images/s {ratio(vs)} ({row.mode})"
        if vs is None:
            measured += f"; no step-alone {row.mode} figure (run the steps section too)"
        add(LOADER_TARGET, measured, loader_keeps_up(vs))
        if settings.cuda and r.busy is not None:
            add(BUSY_TARGET_TEXT, f"{100 * r.busy:.1f}% ({row.mode})", r.busy > BUSY_TARGET)
        elif settings.cuda:
            add(BUSY_TARGET_TEXT, f"{NA} ({r.busy_error or 'not profiled'})", None)
    decode_only = DEVICE_DECODE_PIPELINE.split("{")[0]
    for row in loaders:
        if row.pipeline.startswith(decode_only) and row.images_per_s is not None:
            measured = f"{row.images_per_s:,.0f} img/s (batches of {row.batch})"
            add(DECODE_TARGET_TEXT, measured, row.images_per_s >= DECODE_TARGET)
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
    "the same side's step-only images/s in the same mode; GPU busy: torch.profiler over a window "
    "of batches left out of img/s."
)


def render(results: Results) -> str:
    """The report: the environment, a table per section, the targets."""
    s, env, steps, loaders, epochs = (
        results.settings,
        results.environment,
        results.steps,
        results.loaders,
        results.epochs,
    )
    specs = model_specs(s.quick)
    lines = ["## densenet_lit benchmark", "", *(f"- {k}: {v}" for k, v in env.items())]
    lines += [
        f"- command: `{results.command}`",
        f"- suite wall time: {(results.elapsed_s or 0.0) / 60:.1f} min",
        f"- timing: {s.warmup} warm-up steps, then {s.windows} windows of {s.steps} steps "
        f"(median window), {s.rounds} round(s) of plain and Lightning alternating",
        *(f"- note: {n}" for n in s.notes),
        "",
    ]
    if steps:
        callbacks = ", ".join(f"`{type(c).__name__}`" for c in default_callbacks())
        modes = {r.mode for rows in steps.values() for r in rows}
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
        lines += ["### CIFAR-10 epoch, end to end", "", text, "", *epoch_section(epochs, s), ""]
    if rows := targets(steps, epochs, specs, s, loaders):
        lines += ["### Targets (set for a GPU)", ""]
        lines += [*table_lines(["target", "measured", "verdict"], rows), ""]
    return "\n".join(lines)
