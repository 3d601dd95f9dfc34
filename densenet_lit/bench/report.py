"""The suite's results as Markdown: header, one table per section, and the GPU targets."""

from __future__ import annotations

from dataclasses import dataclass, field

from densenet_lit.bench.common import MODES, ModelSpec, Settings, median
from densenet_lit.bench.epoch import EpochResult
from densenet_lit.bench.loaders import DEVICE_DECODE_PIPELINE, LoaderRow
from densenet_lit.bench.steps import StepResult
from densenet_lit.callbacks import default_callbacks
from densenet_lit.models import DEEPEST_MEMORY_LEVEL

PLAIN, PLAIN_OURS, LIGHTNING = "plain", "plain_ours", "lightning"
# (mode, at most this fraction of fp32's memory, at no more than this many times its step
# time): memory_efficient=True; the deepest level: the 0.30x memory of the authors' most
# frugal level (their models/README.md) at 1.3x time.
MEMORY_TARGETS = (
    ("memory_efficient", 0.5, 1.25),
    (f"memory_efficient={DEEPEST_MEMORY_LEVEL}", 0.3, 1.3),
)
NA = "n/a"
LOADER_RATIO_TARGET = 0.95  # epoch images/s over step-alone images/s: the loader keeps up
BUSY_TARGET = 0.95  # the "GPU busy > 95% of a CIFAR epoch"
DECODE_TARGET = 5000.0  # images/s of ImageNet decoding + augmentation on one H100


@dataclass
class StepRow:
    """One model in one mode: every runner's result, side by side."""

    model: str
    mode: str
    batch: int
    runs: dict[str, StepResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    memory_errors: dict[str, str] = field(default_factory=dict)

    def ips(self, runner: str) -> float | None:
        run = self.runs.get(runner)
        return run.images_per_s if run is not None else None

    def ratio(self, runner: str, baseline: str) -> float | None:
        a, b = self.ips(runner), self.ips(baseline)
        return a / b if a and b else None


@dataclass
class EpochRow:
    mode: str
    pipeline: str
    result: EpochResult | None
    error: str | None
    step_ips: float | None  # the same side's step-only images/s in this mode and batch

    @property
    def vs_step(self) -> float | None:
        """Epoch images/s over step-alone images/s (1x: the loader costs nothing)."""
        if self.result is None or not self.step_ips:
            return None
        return self.result.images_per_s / self.step_ips


def loader_keeps_up(vs_step: float | None) -> bool | None:
    """The loader is not the bottleneck when the epoch runs at >= 0.95x the step alone.

    This, not GPU busy, decides the loader target: an eager DenseNet-BC-100 step at batch 64
    is bound by kernel launches (about 2,200 per step), so the GPU idles between kernels and
    stays below 95% busy even with a loader that costs nothing.
    """
    return None if vs_step is None else vs_step >= LOADER_RATIO_TARGET


# --------------------------------------------------------------------------------- format


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return NA
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def cell(value: str, error: str | None) -> str:
    return f"{NA} ({error})" if error else value


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


# -------------------------------------------------------------------------------- sections


def runners_of(spec: ModelSpec) -> list[str]:
    return [PLAIN, PLAIN_OURS, LIGHTNING] if spec.has_torchvision_baseline else [PLAIN, LIGHTNING]


def memory_label(settings: Settings) -> str:
    if settings.device.type == "cuda":
        return "peak MiB"
    return "activation MiB"


def step_section(spec: ModelSpec, rows: list[StepRow], settings: Settings) -> list[str]:
    runners = runners_of(spec)
    mem = memory_label(settings)
    batch = rows[0].batch if rows else settings.batch[spec.key]
    head = ["mode", "plain loop img/s"]
    if PLAIN_OURS in runners:
        head.append("plain loop, our net img/s")
    head += ["Lightning img/s", "Lightning / plain"]
    if PLAIN_OURS in runners:
        head.append("Lightning / plain, our net")
    head += ["Lightning vs fp32", f"{mem} plain", f"{mem} Lightning", "memory vs fp32"]
    head.append("first step s (plain / Lightning)")
    by_mode = {r.mode: r for r in rows}
    fp32 = by_mode.get("fp32")
    out_rows = []
    for row in rows:
        cells = [row.mode]
        for runner in runners:
            if runner == LIGHTNING:
                continue
            cells.append(cell(num(row.ips(runner)), row.errors.get(runner)))
        cells.append(cell(num(row.ips(LIGHTNING)), row.errors.get(LIGHTNING)))
        cells.append(ratio(row.ratio(LIGHTNING, PLAIN)))
        if PLAIN_OURS in runners:
            cells.append(ratio(row.ratio(LIGHTNING, PLAIN_OURS)))
        speed = None
        if fp32 is not None and fp32.ips(LIGHTNING) and row.ips(LIGHTNING):
            speed = row.ips(LIGHTNING) / fp32.ips(LIGHTNING)
        cells.append(ratio(speed))
        for runner in (PLAIN, LIGHTNING):
            value = row.memory_mib.get(runner)
            text = num(value)
            if value is not None and settings.device.type != "cuda" and MODES[row.mode].compile:
                text += " *"
            cells.append(cell(text, None if value is not None else row.memory_errors.get(runner)))
        mem_ratio = None
        if fp32 is not None and fp32.memory_mib.get(LIGHTNING) and row.memory_mib.get(LIGHTNING):
            mem_ratio = row.memory_mib[LIGHTNING] / fp32.memory_mib[LIGHTNING]
        cells.append(ratio(mem_ratio))
        firsts = [row.runs[r].first_step_s if r in row.runs else None for r in (PLAIN, LIGHTNING)]
        cells.append(" / ".join(num(f, 2) for f in firsts))
        out_rows.append(cells)
    lines = [f"### {spec.title}, batch {batch}", ""]
    lines.append(f"Plain loop: {spec.baseline_name}.")
    lines.append("")
    return lines + table(head, out_rows)


def loader_section(rows: list[LoaderRow]) -> list[str]:
    head = ["loader", "pipeline", "workers", "batch", "img/s"]
    body = [
        [r.loader, r.pipeline, str(r.workers), str(r.batch), cell(num(r.images_per_s), r.error)]
        for r in rows
    ]
    return table(head, body)


def epoch_section(rows: list[EpochRow], settings: Settings) -> list[str]:
    head = ["pipeline", "mode", "workers", "batches x batch", "time s", "img/s"]
    head += ["vs step alone", "GPU busy"]
    body = []
    for row in rows:
        r = row.result
        if r is None:
            body.append([row.pipeline, row.mode, "", "", "", cell("", row.error), "", ""])
            continue
        vs = row.vs_step
        if r.busy is not None:
            busy = f"{100 * r.busy:.1f}% ({r.busy_batches} batches)"
        elif settings.device.type != "cuda":
            busy = NA + " (CPU)"
        else:
            busy = f"{NA} ({r.busy_error or 'not profiled'})"
        body.append(
            [
                r.pipeline,
                r.mode,
                str(r.workers),
                f"{r.batches} x {r.batch}",
                num(r.seconds, 2),
                num(r.images_per_s),
                ratio(vs),
                busy,
            ]
        )
    return table(head, body)


# -------------------------------------------------------------------------------- targets


def targets(
    steps: dict[str, list[StepRow]],
    epochs: list[EpochRow],
    specs: dict[str, ModelSpec],
    settings: Settings,
    loaders: list[LoaderRow] = (),
) -> list[list[str]]:
    """The issue's GPU targets, each with what this run measured."""
    gpu = settings.device.type == "cuda"

    def verdict(ok: bool | None) -> str:
        if ok is None:
            return NA
        if not gpu:
            return "not judged (CPU run; GPU target)"
        return "met" if ok else "NOT met"

    out = []
    ratios = [
        (row.ratio(LIGHTNING, PLAIN), f"{specs[key].short} {row.mode}")
        for key, rows in steps.items()
        for row in rows
        if row.ratio(LIGHTNING, PLAIN) is not None
    ]
    if ratios:
        worst, where = min(ratios)
        out.append(
            [
                "Lightning step >= plain loop in every mode (overhead < 3%)",
                f"worst Lightning / plain {worst:.2f}x ({where}); median "
                f"{median([r for r, _ in ratios]):.2f}x over {len(ratios)} cases",
                verdict(worst >= 0.97),
            ]
        )
    for key, rows in steps.items():
        name = specs[key].short
        by_mode = {r.mode: r for r in rows}
        fp32, fast = by_mode.get("fp32"), by_mode.get("fast")
        if fp32 and fast and fp32.ips(LIGHTNING) and fast.ips(LIGHTNING):
            s = fast.ips(LIGHTNING) / fp32.ips(LIGHTNING)
            out.append([f"{name}: fast mode >= 2x fp32 eager", f"{s:.2f}x", verdict(s >= 2.0)])
        for mode, max_mem, max_slow in MEMORY_TARGETS:
            eff = by_mode.get(mode)
            if not (fp32 and eff):
                continue
            m0, m1 = fp32.memory_mib.get(LIGHTNING), eff.memory_mib.get(LIGHTNING)
            t0, t1 = fp32.ips(LIGHTNING), eff.ips(LIGHTNING)
            if m0 and m1 and t0 and t1:
                mem, slow = m1 / m0, t0 / t1
                out.append(
                    [
                        f"{name}: {mode} <= {max_mem}x memory at <= {max_slow}x time",
                        f"{mem:.2f}x {memory_label(settings)}, {slow:.2f}x time per step",
                        verdict(mem <= max_mem and slow <= max_slow),
                    ]
                )
    for row in epochs:
        r = row.result
        if r is None or not row.pipeline.startswith("ours"):
            continue
        vs = row.vs_step
        measured = f"epoch / step-alone images/s {ratio(vs)} ({row.mode})"
        if vs is None:
            measured += f"; no step-alone {row.mode} figure (run the steps section too)"
        out.append(
            [
                "CIFAR loader never the bottleneck "
                f"(epoch >= {LOADER_RATIO_TARGET:.2f}x step alone)",
                measured,
                verdict(loader_keeps_up(vs)),
            ]
        )
        if gpu:
            if r.busy is not None:
                busy, ok = f"{100 * r.busy:.1f}% ({row.mode})", r.busy > BUSY_TARGET
            else:
                busy, ok = f"{NA} ({r.busy_error or 'not profiled'})", None
            out.append(
                [
                    "GPU busy > 95% of a CIFAR epoch (launch-bound steps stay below it)",
                    busy,
                    verdict(ok),
                ]
            )
    decode_only = DEVICE_DECODE_PIPELINE.split("{")[0]
    for row in loaders:
        if row.pipeline.startswith(decode_only) and row.images_per_s is not None:
            out.append(
                [
                    f"ImageNet JPEG decoding + augmentation on the device >= {DECODE_TARGET:,.0f} "
                    "img/s (one H100)",
                    f"{row.images_per_s:,.0f} img/s (batches of {row.batch})",
                    verdict(row.images_per_s >= DECODE_TARGET),
                ]
            )
    return out


# --------------------------------------------------------------------------------- report


def cli_callback_names() -> str:
    return ", ".join(f"`{type(c).__name__}`" for c in default_callbacks())


def render(
    env: dict[str, str],
    settings: Settings,
    specs: dict[str, ModelSpec],
    steps: dict[str, list[StepRow]],
    loaders: list[LoaderRow],
    epochs: list[EpochRow],
    command: str,
    elapsed_s: float,
) -> str:
    cpu = settings.device.type != "cuda"
    lines = ["## densenet_lit benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    lines.append(f"- command: `{command}`")
    lines.append(f"- suite wall time: {elapsed_s / 60:.1f} min")
    lines.append(
        f"- timing: {settings.warmup} warm-up steps, then {settings.windows} windows of "
        f"{settings.steps_per_window} steps (median window), {settings.rounds} round(s) of "
        "plain and Lightning alternating"
    )
    lines += [f"- note: {n}" for n in settings.notes]
    lines.append("")
    if steps:
        lines += ["### Training step", ""]
        lines.append(
            "Images/s of forward + loss + backward + SGD-Nesterov update on a batch already on "
            "the device. Lightning: `DenseNetModule` in `Trainer` (hooks, logging and metrics "
            f"included) with the CLI's default callbacks ({cli_callback_names()}) and "
            f"its CSV logger, without checkpoints, progress bar or W&B. Ratios above 1x "
            "mean faster (or, for memory, more)."
        )
        if cpu:
            lines.append(
                "Memory on CPU is the bytes the autograd graph saves for backward "
                "(`densenet_lit.models.memory.activation_bytes`), not an allocator peak; "
                "`*`: compile modes show the eager graph's count."
            )
        else:
            lines.append(
                "Memory is `torch.cuda.max_memory_allocated` over the timed steps "
                "(weights, gradients, optimizer state and activations)."
            )
        modes = {r.mode for rows in steps.values() for r in rows}
        legend = "; ".join(f"{m.name} = {m.label}" for m in MODES.values() if m.name in modes)
        lines.append(f"Modes: {legend}.")
        lines.append(
            "First step: the first training step of each run, compilation included; a run "
            "may reuse code torch.compile already generated in this process for the same "
            "network (the Lightning run after the plain loop), which makes its first step short."
        )
        lines.append("")
        for key, rows in steps.items():
            lines += step_section(specs[key], rows, settings) + [""]
    if loaders:
        lines += ["### Data loaders alone", ""]
        lines.append(
            "Images/s delivered on the device, augmentation included; synthetic data in the "
            "real file formats (random pixels), digits real; ImageNet: smooth random 500x375 "
            "JPEGs of about 110 KB, read from the page cache. torchvision: `CIFAR10` with "
            "RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize per image. "
            "ImageNet's `decode: device` path in parts: its workers alone (batches of bytes, "
            "not decoded), decoding + augmentation alone (batches held in memory), and both."
        )
        lines.append("")
        lines += loader_section(loaders) + [""]
    if epochs:
        n = settings.epoch_batches
        span = "the whole epoch" if n is None else f"the first {n} batches of an epoch"
        lines += ["### CIFAR-10 epoch, end to end", ""]
        lines.append(
            f"Loader plus training step over {span} (after warm-up), network "
            f"{specs['cifar'].title}. 'vs step alone' divides by the same side's step-only "
            "images/s in the same mode (1x: the loader costs nothing)."
        )
        if not cpu:
            lines.append(
                "GPU busy: the share of the profiled batches' wall time with GPU kernels or "
                "copies running (torch.profiler). Those batches, slowed by the profiler, are "
                "left out of img/s; 'time s' is the whole epoch."
            )
        lines.append("")
        lines += epoch_section(epochs, settings) + [""]
    rows = targets(steps, epochs, specs, settings, loaders)
    if rows:
        lines += ["### Targets (set for a GPU)", ""]
        lines += table(["target", "measured", "verdict"], rows) + [""]
    return "\n".join(lines)
