"""What the host offers a vLLM engine, and the engine settings chosen from it.

The right dtype and CPU settings depend on the machine: bf16 is fast where the CPU has native
bf16 kernels (AVX-512-BF16, AMX) and several times slower than float32 where it has not (AVX2
only). `choose_engine_tuning` turns what `detect_host` reads into one explained choice that is
logged once per engine and recorded with every generated row.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

# ISA flags that decide CPU kernel speed for LLM inference (x86 names from /proc/cpuinfo, and
# aarch64's `bf16` feature).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "bf16")

AUTO = "auto"


@dataclass(frozen=True)
class HostHardware:
    """The parts of a machine that engine settings depend on."""

    arch: str
    cpu_model: str
    cores: int  # CPUs this process may run on (its affinity mask)
    isa_flags: tuple[str, ...]  # the REPORTED_FLAGS the CPU has
    memory_gib: float
    gpus: int = 0
    gpu_bf16: bool = False  # compute capability >= 8.0 (Ampere and newer)

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.isa_flags for flag in NATIVE_BF16_FLAGS)

    def describe(self) -> str:
        """One line naming the machine, as benchmark reports and logs print it."""
        missing = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f not in self.isa_flags]
        flags = ", ".join(self.isa_flags) or "none of " + "/".join(REPORTED_FLAGS)
        if missing and self.arch in ("x86_64", "AMD64"):
            flags += "; no " + "/".join(missing)
        text = f"{self.cpu_model} ({self.arch}, {self.cores} cores; {flags}; "
        text += f"{self.memory_gib:.0f} GiB RAM)"
        if self.gpus:
            text += f", {self.gpus} GPU(s)"
        return text


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, reported ISA flags) from the text of /proc/cpuinfo (x86 or aarch64)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        else:
            fields.setdefault(key, value.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or ""
    # Virtual machines often report a bare "AMD EPYC"; family and model tell the generation.
    if model and "cpu family" in fields and not any(c.isdigit() for c in model):
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return model, tuple(f for f in REPORTED_FLAGS if f in flags)


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def _gpus() -> tuple[int, bool]:
    """Count of CUDA devices and whether the first supports bf16, without initialising CUDA
    when no NVIDIA driver is present (the CPU build of vLLM ships a torch without CUDA)."""
    if not Path("/proc/driver/nvidia").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0, False
    try:
        import torch

        if not torch.cuda.is_available():
            return 0, False
        return torch.cuda.device_count(), bool(torch.cuda.is_bf16_supported())
    except Exception:  # a broken driver means no usable GPU, not a crash
        return 0, False


@functools.cache
def detect_host() -> HostHardware:
    """The machine this process runs on (read once per process)."""
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = "", ()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    gpus, gpu_bf16 = _gpus()
    return HostHardware(
        arch=platform.machine(),
        cpu_model=model or platform.processor() or "unknown CPU",
        cores=cores,
        isa_flags=flags,
        memory_gib=round(_memory_gib(), 1),
        gpus=gpus,
        gpu_bf16=gpu_bf16,
    )


def choose_dtype(requested: str, host: HostHardware) -> tuple[str, str]:
    """(dtype, why). `auto` means bf16 on GPUs that support it and on CPUs with native bf16
    kernels, float32 on every other CPU (where bf16 is emulated and measured 4.5x slower)."""
    if requested != AUTO:
        return requested, f"set explicitly (MIND_DTYPE={requested})"
    if host.gpus:
        if host.gpu_bf16:
            return "bfloat16", "GPU with bf16 support"
        return "float16", "GPU without bf16 support (compute capability < 8.0)"
    native = [f for f in NATIVE_BF16_FLAGS if f in host.isa_flags]
    if native:
        return "bfloat16", f"CPU has native bf16 ({', '.join(native)})"
    return "float32", "CPU lacks native bf16 (no avx512_bf16/amx_bf16): bf16 would be emulated"


@dataclass(frozen=True)
class EngineTuning:
    """Engine settings chosen for this host, with the reason for each. Two tunings that set the
    same values are equal whatever their explanations, so they share one loaded engine."""

    dtype: str
    dtype_reason: str = field(compare=False)
    device: str  # "cpu" or "gpu"
    threads: int | None  # CPU: torch/OpenMP threads; None on GPU
    max_num_batched_tokens: int | None  # None leaves vLLM's default
    # Requests per engine call (each finished batch is persisted); not an engine setting.
    batch_size: int = field(compare=False)
    host: str = field(compare=False)  # HostHardware.describe()

    def summary(self) -> str:
        """The one log line that says what was chosen and why."""
        parts = [f"dtype={self.dtype} ({self.dtype_reason})"]
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        if self.max_num_batched_tokens is not None:
            parts.append(f"max_num_batched_tokens={self.max_num_batched_tokens}")
        parts.append(f"batch_size={self.batch_size}")
        return f"engine tuning on {self.host}: " + ", ".join(parts)

    def as_metadata(self) -> dict[str, object]:
        return asdict(self)


def choose_engine_tuning(
    requested_dtype: str,
    host: HostHardware,
    *,
    max_model_len: int,
    threads: int | None = None,
    max_num_batched_tokens: int | None = None,
    batch_size: int | None = None,
) -> EngineTuning:
    """Settings for one engine on `host`; explicit values win over the machine's defaults.

    On CPU, prefill is not chunked (per-request seeds crash chunked prefill there), so every
    prompt must fit one step: the step budget is at least the context length. A CPU engine's
    throughput stops growing after a few dozen sequences in flight, so its batches are kept that
    small: finished work is persisted every few minutes instead of every half hour.
    """
    dtype, reason = choose_dtype(requested_dtype, host)
    if host.gpus:
        return EngineTuning(
            dtype=dtype,
            dtype_reason=reason,
            device="gpu",
            threads=None,
            max_num_batched_tokens=max_num_batched_tokens,
            batch_size=batch_size or GPU_BATCH_SIZE,
            host=host.describe(),
        )
    return EngineTuning(
        dtype=dtype,
        dtype_reason=reason,
        device="cpu",
        threads=threads or host.cores,
        max_num_batched_tokens=max(max_num_batched_tokens or CPU_STEP_TOKENS, max_model_len),
        batch_size=batch_size or max(CPU_BATCH_PER_CORE, CPU_BATCH_PER_CORE * host.cores),
        host=host.describe(),
    )


# Measured in benchmarks/RESULTS.md (CPU engine settings): a bigger step budget gained nothing
# on CPU, so vLLM's own CPU default stays; throughput at 16 sequences per core is within a few
# percent of 64 in flight.
CPU_STEP_TOKENS = 4096
CPU_BATCH_PER_CORE = 16
GPU_BATCH_SIZE = 256


if __name__ == "__main__":  # `python -m mind_assets.llm.hardware` names this machine
    print(detect_host().describe())
