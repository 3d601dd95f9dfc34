"""The suite's results as Markdown: header, one table per section, and the GPU targets.

Rows are the plain dicts the suite writes to JSON; a measured value is a number, or the
``"n/a (reason)"`` text of what failed, which its cell shows."""

from __future__ import annotations

import statistics

from densenet_lit.bench.common import NA, get, over
from densenet_lit.bench.config import DEEPEST, MODES, ModelSpec, Settings, model_specs
from densenet_lit.bench.loaders import DEVICE_DECODE_PIPELINE
from densenet_lit.bench.steps import LIGHTNING, PLAIN, PLAIN_OURS
from densenet_lit.callbacks import default_callbacks
from densenet_lit.markdown import table_lines

# (mode, at most this fraction of fp32's memory, at no more than this many times its step
# time); the deepest level: the 0.30x of the authors' most frugal level at 1.3x time.
MEMORY_TARGETS = (("memory_efficient", 0.5, 1.25), (DEEPEST, 0.3, 1.3))
LOADER_RATIO, BUSY, DECODE = 0.95, 0.95, 5000.0  # epoch / step alone; GPU busy; img/s (H100)
OVERHEAD_TARGET = "Lightning step >= plain loop in every mode (overhead < 3%)"
LOADER_TARGET = f"CIFAR loader never the bottleneck (epoch >= {LOADER_RATIO:.2f}x step alone)"
BUSY_TARGET = f"GPU busy > {BUSY:.0%} of a CIFAR epoch (launch-bound steps stay below it)"
DECODE_TARGET = (
    f"ImageNet JPEG decoding + augmentation on the device >= {DECODE:,.0f} img/s (one H100)"
)
STEP_TEXT = (
    "Images/s of forward + loss + backward + SGD-Nesterov update on a batch already on the "
    "device. Lightning: `DenseNetModule` in `Trainer` with the CLI's default callbacks ({}) and "
    "its CSV logger. Memory: {}. Ratios above 1x mean faster (or, for memory, more). Modes: {}. "
    "First step: compilation included (a run may reuse code torch.compile made earlier in this "
    "process)."
)
MEMORY_LABEL = {"cuda": "peak MiB", "cpu": "activation MiB"}  # the memory columns' unit
PEAK = "`torch.cuda.max_memory_allocated` over the timed steps"
SAVED = "the bytes autograd saves for backward (`*`: compile modes show the eager graph's)"
LOADER_TEXT = (
    "Images/s delivered on the device, augmentation included; synthetic data in the real file "
    "formats, digits real (see docs/benchmarks.md)."
)
EPOCH_TEXT = (
    "Loader plus training step over {} (after warm-up), network {}. 'vs step alone' divides by "
    "the same side's step-only images/s in the same mode; GPU busy: CUDA kernel time that "
    "torch.profiler records over a window of batches (left out of img/s), over its wall time."
)


def loader_keeps_up(vs_step: float | None) -> bool | None:
    """The loader is not the bottleneck when the epoch runs at >= 0.95x the step alone. This,
    not GPU busy, judges the loader: an eager DenseNet-BC-100 step at batch 64 is bound by
    kernel launches, so the GPU idles between kernels even with a free loader."""
    return None if vs_step is None else vs_step >= LOADER_RATIO


def num(value, digits: int = 1) -> str:
    """A number as a cell; an "n/a (reason)" text as it is; None as n/a."""
    if not isinstance(value, float | int):
        return NA if value is None else value
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def percent(busy, note: str) -> str:
    """GPU busy as a cell: a fraction as a percentage, with ``note``; a text as it is."""
    return f"{100 * busy:.1f}% ({note})" if isinstance(busy, float) else busy


def step_section(spec: ModelSpec, rows: list[dict], settings: Settings) -> list[str]:
    """A network's table: each mode's runners side by side, their ratios, against fp32."""
    ours = any(PLAIN_OURS in r["runs"] for r in rows)  # a plain loop of our net too (ImageNet)
    plains = [PLAIN, PLAIN_OURS] if ours else [PLAIN]
    mem = MEMORY_LABEL[settings.device]
    fp32 = next((r for r in rows if r["mode"] == "fp32"), None)
    head = ["mode", "plain loop img/s", *["plain loop, our net img/s"] * ours, "Lightning img/s"]
    head += ["Lightning / plain", *["Lightning / plain, our net"] * ours, "Lightning vs fp32"]
    head += [f"{mem} plain", f"{mem} Lightning", "memory vs fp32"]
    head.append("first step s (plain / Lightning)")
    body = []
    for row in rows:
        lightning = get(row, LIGHTNING)
        memory = [get(row, k, "memory_mib") for k in (PLAIN, LIGHTNING)]
        star = " *" if not settings.cuda and MODES[row["mode"]].compile else ""  # eager graph's
        cells = [row["mode"], *(num(get(row, k)) for k in (*plains, LIGHTNING))]
        cells += [ratio(over(lightning, get(row, k))) for k in plains]
        cells.append(ratio(over(lightning, get(fp32, LIGHTNING))))
        cells += [num(m) + star * isinstance(m, float) for m in memory]
        cells.append(ratio(over(memory[1], get(fp32, LIGHTNING, "memory_mib"))))
        firsts = [get(row, k, "first_step_s") for k in (PLAIN, LIGHTNING)]
        body.append([*cells, " / ".join(num(f, 2) if f else NA for f in firsts)])
    title = f"### {spec.title}, batch {rows[0]['batch']}"
    return [title, "", f"Plain loop: {spec.baseline_name}.", "", *table_lines(head, body)]


def epoch_section(rows: list[dict]) -> list[str]:
    """The epochs' table; a failed epoch's error stands in its img/s column."""
    head = ["pipeline", "mode", "workers", "batches x batch", "time s", "img/s", "vs step alone"]
    body = []
    for r in rows:
        cells = [r["pipeline"], r["mode"], "", "", "", r.get("error"), "", ""]
        if "error" not in r:
            busy = percent(r["busy"], f"{r.get('busy_batches')} batches")
            cells[2:] = [r["workers"], f"{r['batches']} x {r['batch']}", num(r["seconds"], 2)]
            cells += [num(r["images_per_s"]), ratio(r["vs_step"]), busy]
        body.append(cells)
    return table_lines([*head, "GPU busy"], body)


def targets(steps: dict, epochs: list[dict], specs: dict, s: Settings, loaders=()) -> list[list]:
    """The issue's GPU targets, each with what this run measured and the verdict."""
    judged = []  # (target, measured, ok), ok None where the run cannot judge it
    ratios = [  # a recipe's mode (modern) does work the plain loop leaves out: not overhead
        (r, f"{specs[key].short} {row['mode']}")
        for key, rows in steps.items()
        for row in rows
        if not MODES[row["mode"]].recipe and (r := over(get(row, LIGHTNING), get(row, PLAIN)))
    ]
    if ratios:
        (worst, where), med = min(ratios), statistics.median([r for r, _ in ratios])
        measured = f"worst Lightning / plain {worst:.2f}x ({where}); median {med:.2f}x over "
        judged.append((OVERHEAD_TARGET, f"{measured}{len(ratios)} cases", worst >= 0.97))
    for key, rows in steps.items():
        name, by_mode = specs[key].short, {r["mode"]: r for r in rows}
        fp32 = by_mode.get("fp32")
        if fast := over(get(by_mode.get("fast"), LIGHTNING), get(fp32, LIGHTNING)):
            judged.append((f"{name}: fast mode >= 2x fp32 eager", f"{fast:.2f}x", fast >= 2))
        for mode, max_mem, max_slow in MEMORY_TARGETS:
            eff = by_mode.get(mode)
            mem = over(get(eff, LIGHTNING, "memory_mib"), get(fp32, LIGHTNING, "memory_mib"))
            if mem and (slow := over(get(fp32, LIGHTNING), get(eff, LIGHTNING))):
                target = f"{name}: {mode} <= {max_mem}x memory at <= {max_slow}x time"
                measured = f"{mem:.2f}x {MEMORY_LABEL[s.device]}, {slow:.2f}x time per step"
                judged.append((target, measured, mem <= max_mem and slow <= max_slow))
    for row in [r for r in epochs if "error" not in r and r["pipeline"].startswith("ours")]:
        vs, busy, mode = row["vs_step"], row["busy"], row["mode"]
        missing = f"; no step-alone {mode} figure (run the steps section too)" * (vs is None)
        measured = f"epoch / step-alone images/s {ratio(vs)} ({mode}){missing}"
        judged.append((LOADER_TARGET, measured, loader_keeps_up(vs)))
        if s.cuda:
            busy_ok = busy > BUSY if isinstance(busy, float) else None
            judged.append((BUSY_TARGET, percent(busy, mode), busy_ok))
    decoding = DEVICE_DECODE_PIPELINE.split("{")[0]
    for row in loaders:
        if row["pipeline"].startswith(decoding) and isinstance(ips := row["images_per_s"], float):
            measured = f"{ips:,.0f} img/s (batches of {row['batch']})"
            judged.append((DECODE_TARGET, measured, ips >= DECODE))
    verdict = ("met", "NOT met") if s.cuda else ("not judged (CPU run; GPU target)",) * 2
    return [[target, m, NA if ok is None else verdict[not ok]] for target, m, ok in judged]


def section(title: str, *parts: str | list[str]) -> list[str]:
    """A report section: its heading, then each paragraph or table and a blank line."""
    lines = [f"### {title}", ""]
    for part in parts:
        lines += [*([part] if isinstance(part, str) else part), ""]
    return lines


def render(results: dict) -> str:
    """The report: the environment, a table per section, the targets."""
    s, steps, loaders, epochs = (results[k] for k in ("settings", "steps", "loaders", "epochs"))
    specs = model_specs(s.quick)
    lines = ["## densenet_lit benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in results["environment"].items()]
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
        lines += section("Training step", text)
        for key, rows in steps.items():
            lines += [*step_section(specs[key], rows, s), ""]
    if loaders:
        keys = ["loader", "pipeline", "workers", "batch"]
        body = [[*(r[k] for k in keys), num(r["images_per_s"])] for r in loaders]
        lines += section("Data loaders alone", LOADER_TEXT, table_lines([*keys, "img/s"], body))
    if epochs:
        n = s.epoch_batches
        batches = f"the first {n} batches of an epoch" if n else "the whole epoch"
        text = EPOCH_TEXT.format(batches, specs["cifar"].title)
        lines += section("CIFAR-10 epoch, end to end", text, epoch_section(epochs))
    if rows := targets(steps, epochs, specs, s, loaders):
        table = table_lines(["target", "measured", "verdict"], rows)
        lines += section("Targets (set for a GPU)", table)
    return "\n".join(lines)
