"""Compatibility verdicts: what a GPU can do for pot's training, and what stands in the way.

Rules (each one a check with status ok / warn / fail / info):

* **torch build**: the card's compute capability against the installed torch build's arch list
  (``torch.cuda.get_arch_list()``). A cubin for ``sm_XY`` runs on any card of the same major
  version with minor >= Y; a ``compute_XY`` PTX entry can be JIT-compiled for newer cards. A
  CPU-only build has an empty list: the verdict names the CUDA build the card needs (PyTorch's
  cu128 and later wheels dropped Maxwell, Pascal and Volta; the cu126 wheels still ship sm_50,
  sm_60, sm_61 and sm_70).
* **bf16**: native only from CC 8.0. ``torch.cuda.is_bf16_supported()`` can say True through
  emulation, which is slower than fp32: emulation is never counted.
* **fp16**: worth it only with tensor cores (CC >= 7.0, but not TU116/TU117: GTX 16xx, CMP 30HX).
  Pascal consumer chips run fp16 at 1/64 of the fp32 rate.
* **VRAM**: each task's need against the card's memory less a reserve for the CUDA context.
* **PCIe**: risers (x1) and mining cards (x4 gen 1) throttle host<->device copies; the verdict
  states the theoretical ceiling and what it means for moving data.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pot_cli.hw.catalog import CatalogCard
from pot_cli.hw.readings import GpuReading

CUDA_CONTEXT_RESERVE_MB = 512
"""Memory a CUDA context, cuBLAS workspace and the caching allocator take before any tensor."""

PCIE_LANE_GB_S: dict[int, float] = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938}
"""Usable bandwidth per lane and direction by PCIe generation (after line encoding), GB/s."""

RISER_WIDTH = 4
"""Links of this width or less get a warning (x1 USB risers, x4 mining cards)."""

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class TaskNeed:
    name: str
    vram_need_mb: int


@dataclass(frozen=True)
class TorchBuild:
    """What the installed torch can run: its version, CUDA version and arch list."""

    version: str
    cuda: str | None
    arch_list: tuple[str, ...]

    @property
    def cpu_only(self) -> bool:
        return self.cuda is None or not self.arch_list


@dataclass
class Check:
    name: str
    status: str
    message: str


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    runs_with_this_torch: bool | None = None
    bf16_native: bool | None = None
    fp16_worthwhile: bool | None = None
    recommended_dtype: str | None = "fp32"  # None: nothing to recommend (lost GPU)
    tasks_fit: dict[str, bool] = field(default_factory=dict)
    pcie_host_gb_s: float | None = None  # theoretical host<->device ceiling of the link

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        for s in (FAIL, WARN):
            if s in statuses:
                return s
        return OK

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status
        return out


def installed_torch_build() -> TorchBuild:
    """The torch of this environment (imports torch)."""
    import torch

    arch = tuple(torch.cuda.get_arch_list()) if torch.version.cuda else ()
    return TorchBuild(version=str(torch.__version__), cuda=torch.version.cuda, arch_list=arch)


_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)[a-z]?$")


def build_runs(cc: tuple[int, int], arch_list: tuple[str, ...]) -> str:
    """ "native" (a matching cubin), "ptx" (JIT from older PTX: works, slow first start) or "no"."""
    ptx = False
    for arch in arch_list:
        m = _ARCH.match(arch)
        if not m:
            continue
        kind, major, minor = m.group(1), int(m.group(2)), int(m.group(3))
        if kind == "sm" and major == cc[0] and minor <= cc[1]:
            return "native"
        if kind == "compute" and (major, minor) <= cc:
            ptx = True
    return "ptx" if ptx else "no"


def suggested_build(cc: tuple[int, int]) -> str:
    """Which PyTorch CUDA wheels run a card of this compute capability."""
    sm = f"sm_{cc[0]}{cc[1]}"
    if cc < (5, 0):
        return f"no current PyTorch build runs {sm} (Kepler and older were dropped long ago)"
    if cc < (7, 5):
        return (
            f"a CUDA build that still ships {sm}: the cu126 wheels "
            "(pip install torch --index-url https://download.pytorch.org/whl/cu126); "
            "cu128 and later dropped Maxwell, Pascal and Volta, and the R580 driver branch is "
            "the last for them"
        )
    return f"a CUDA build with {sm}: any current one (e.g. the cu126 or cu128 wheels)"


def has_tensor_cores(reading: GpuReading, card: CatalogCard | None) -> bool | None:
    if card is not None:
        return card.tensor_cores
    cc = reading.cc_tuple
    if cc is None:
        return None
    name = (reading.name or "").upper()
    if "GTX 16" in name or "CMP 30HX" in name or "MX" in name.split():
        return False  # TU116/TU117 Turing without tensor cores
    return cc >= (7, 0)


def _torch_check(cc: tuple[int, int], build: TorchBuild) -> tuple[Check, bool]:
    sm = f"sm_{cc[0]}{cc[1]}"
    if build.cpu_only:
        return (
            Check(
                "torch build",
                FAIL,
                f"torch {build.version} is a CPU-only build: this card (CC {cc[0]}.{cc[1]}, "
                f"{sm}) needs {suggested_build(cc)}",
            ),
            False,
        )
    runs = build_runs(cc, build.arch_list)
    archs = " ".join(build.arch_list)
    if runs == "native":
        return Check("torch build", OK, f"torch {build.version} ships code for {sm}"), True
    if runs == "ptx":
        return (
            Check(
                "torch build",
                WARN,
                f"torch {build.version} has no {sm} cubin; it JIT-compiles PTX at first use "
                f"(slow start, may miss kernels); better: {suggested_build(cc)}",
            ),
            True,
        )
    return (
        Check(
            "torch build",
            FAIL,
            f"torch {build.version} (CUDA {build.cuda}; arch list {archs}) cannot run {sm}: "
            f"install {suggested_build(cc)}",
        ),
        False,
    )


def _pcie_check(reading: GpuReading) -> tuple[Check | None, float | None]:
    width = reading.pcie_width_current or reading.pcie_width_max
    gen = reading.pcie_gen_max or reading.pcie_gen_current
    if width is None or gen is None:
        return Check("pcie", INFO, "PCIe link not reported"), None
    ceiling = PCIE_LANE_GB_S.get(gen, PCIE_LANE_GB_S[5]) * width
    idle_note = ""
    if reading.pcie_gen_current is not None and reading.pcie_gen_current < gen:
        idle_note = (
            f"; running at gen {reading.pcie_gen_current} now (cards drop the link speed when idle)"
        )
    gpu_gen = reading.pcie_gen_gpu_max
    slot_note = ""
    if gpu_gen is not None and gpu_gen > gen:
        slot_note = f"; the card can do gen {gpu_gen}, the slot or riser limits it to gen {gen}"
    link = f"PCIe gen {gen} x{width}: host<->device at most {ceiling:.2f} GB/s"
    if width <= RISER_WIDTH:
        seconds_per_gib = 1.0737 / ceiling
        kind = "x1 riser" if width == 1 else f"x{width} link"
        return (
            Check(
                "pcie",
                WARN,
                f"{link} ({kind}): uploading 1 GiB takes >= {seconds_per_gib:.1f} s and a 64 MB "
                f"batch >= {64 / ceiling:.0f} ms; keep the data set on the card "
                f"and move only gradients{idle_note}{slot_note}",
            ),
            ceiling,
        )
    return Check("pcie", OK, f"{link}{idle_note}{slot_note}"), ceiling


def judge(
    reading: GpuReading,
    card: CatalogCard | None,
    build: TorchBuild,
    tasks: list[TaskNeed],
) -> Verdict:
    """The verdict for one GPU (reading from NVML, catalog entry if recognised)."""
    verdict = Verdict()
    if reading.error:
        # A lost GPU: nothing else can be judged until it is back on the bus.
        verdict.checks.append(Check("nvml", FAIL, reading.error))
        verdict.recommended_dtype = None
        return verdict
    cc = reading.cc_tuple
    if cc is None and card is not None and card.compute_capability:
        major, minor = card.compute_capability.split(".")
        cc = (int(major), int(minor))
    if cc is None:
        verdict.checks.append(Check("compute capability", WARN, "unknown: cannot judge"))
    else:
        check, runs = _torch_check(cc, build)
        verdict.checks.append(check)
        verdict.runs_with_this_torch = runs
        verdict.bf16_native = cc >= (8, 0)
        if verdict.bf16_native:
            verdict.checks.append(Check("bf16", OK, f"native bf16 (CC {cc[0]}.{cc[1]} >= 8.0)"))
        else:
            verdict.checks.append(
                Check(
                    "bf16",
                    INFO,
                    "no native bf16 below CC 8.0 (emulated bf16 is slower than fp32: not counted)",
                )
            )
        tensor = has_tensor_cores(reading, card)
        verdict.fp16_worthwhile = bool(tensor)
        if tensor:
            verdict.checks.append(Check("fp16", OK, "tensor cores: fp16 mixed precision pays"))
        elif cc[0] == 6 and cc[1] != 0:
            verdict.checks.append(
                Check("fp16", INFO, "Pascal consumer chip: fp16 runs at 1/64 rate, use fp32")
            )
        else:
            verdict.checks.append(Check("fp16", INFO, "no tensor cores: fp16 gains little"))
        if verdict.bf16_native:
            verdict.recommended_dtype = "bf16"
        elif verdict.fp16_worthwhile:
            verdict.recommended_dtype = "fp16"
    if card is not None and card.compute_capability_inferred:
        verdict.checks.append(
            Check("catalog", INFO, f"{card.name}: capability inferred from {card.chip}; bench it")
        )
    total = reading.memory_total_mb
    if total is None and card is not None:
        total = card.vram_gb * 1024
    if total is None:
        verdict.checks.append(Check("vram", WARN, "memory size unknown"))
    else:
        usable = max(0, total - CUDA_CONTEXT_RESERVE_MB)
        for task in tasks:
            fits = task.vram_need_mb <= usable
            verdict.tasks_fit[task.name] = fits
            verdict.checks.append(
                Check(
                    f"vram {task.name}",
                    OK if fits else FAIL,
                    f"needs {task.vram_need_mb} MB of {usable} MB usable "
                    f"({total} MB less {CUDA_CONTEXT_RESERVE_MB} MB for the CUDA context)",
                )
            )
        used = reading.memory_used_mb
        if used is not None and used > CUDA_CONTEXT_RESERVE_MB:
            verdict.checks.append(
                Check("vram in use", INFO, f"{used} MB in use now (another process, a miner?)")
            )
    pcie, ceiling = _pcie_check(reading)
    if pcie is not None:
        verdict.checks.append(pcie)
    verdict.pcie_host_gb_s = ceiling
    return verdict
