"""Engine settings chosen from the machine: `auto` dtype from CPU flags, and what gets logged."""

from __future__ import annotations

import logging

import pytest

from mind_assets.llm.hardware import (
    HostHardware,
    choose_dtype,
    choose_engine_tuning,
    detect_host,
    parse_cpuinfo,
)
from mind_assets.llm.resource import LLMResource

# Excerpts of real /proc/cpuinfo files (one logical CPU each).
AVX2_ONLY_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 sha_ni vaes
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ICE_LAKE = """model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512_vnni
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm sve
CPU implementer\t: 0x41
"""


def host(cpuinfo: str, arch: str = "x86_64", gpus: int = 0, gpu_bf16: bool = False):
    model, flags = parse_cpuinfo(cpuinfo)
    return HostHardware(
        arch=arch,
        cpu_model=model or "unknown CPU",
        cores=2,
        isa_flags=flags,
        memory_gib=24.0,
        gpus=gpus,
        gpu_bf16=gpu_bf16,
    )


def test_avx2_only_cpu_gets_float32_and_says_why():
    dtype, reason = choose_dtype("auto", host(AVX2_ONLY_EPYC))
    assert dtype == "float32"
    assert "avx512_bf16" in reason and "amx_bf16" in reason


@pytest.mark.parametrize(
    ("cpuinfo", "arch", "flag"),
    [(SAPPHIRE_RAPIDS, "x86_64", "avx512_bf16"), (GRAVITON3, "aarch64", "bf16")],
)
def test_cpu_with_native_bf16_gets_bfloat16(cpuinfo, arch, flag):
    dtype, reason = choose_dtype("auto", host(cpuinfo, arch))
    assert dtype == "bfloat16" and flag in reason


def test_avx512_without_bf16_is_still_float32():
    assert choose_dtype("auto", host(ICE_LAKE))[0] == "float32"


def test_gpus_get_bf16_when_supported_and_fp16_before_ampere():
    assert choose_dtype("auto", host(AVX2_ONLY_EPYC, gpus=1, gpu_bf16=True))[0] == "bfloat16"
    assert choose_dtype("auto", host(AVX2_ONLY_EPYC, gpus=1, gpu_bf16=False))[0] == "float16"


def test_an_explicit_dtype_wins_on_any_machine():
    assert choose_dtype("bfloat16", host(AVX2_ONLY_EPYC)) == (
        "bfloat16",
        "set explicitly (MIND_DTYPE=bfloat16)",
    )


def test_cpuinfo_parsing_keeps_model_and_only_the_flags_that_matter():
    model, flags = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert flags == ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def test_description_names_the_cpu_and_the_missing_bf16_flags():
    text = host(AVX2_ONLY_EPYC).describe()
    assert "AMD EPYC 7B13" in text and "2 cores" in text and "avx2" in text
    assert "no avx512f/avx512_bf16/amx_bf16" in text


def test_cpu_step_budget_never_splits_a_prompt_and_threads_follow_the_cores():
    tuning = choose_engine_tuning("auto", host(AVX2_ONLY_EPYC), max_model_len=8192)
    assert tuning.device == "cpu" and tuning.threads == 2
    assert tuning.max_num_batched_tokens is not None and tuning.max_num_batched_tokens >= 8192
    explicit = choose_engine_tuning(
        "auto", host(AVX2_ONLY_EPYC), max_model_len=4096, threads=1, max_num_batched_tokens=1024
    )
    assert explicit.threads == 1 and explicit.max_num_batched_tokens == 4096
    gpu = choose_engine_tuning("auto", host(AVX2_ONLY_EPYC, gpus=1), max_model_len=4096)
    assert gpu.threads is None and gpu.max_num_batched_tokens is None


def test_batches_are_small_on_cpu_large_on_gpu_and_never_change_the_engine():
    cpu = choose_engine_tuning("auto", host(AVX2_ONLY_EPYC), max_model_len=4096)
    gpu = choose_engine_tuning("auto", host(AVX2_ONLY_EPYC, gpus=1), max_model_len=4096)
    assert cpu.batch_size == 32 and gpu.batch_size == 256
    explicit = choose_engine_tuning("auto", host(AVX2_ONLY_EPYC), max_model_len=4096, batch_size=2)
    assert explicit.batch_size == 2 and explicit == cpu  # the same engine serves both


def test_this_machine_resolves_auto_consistently_with_its_flags():
    here = detect_host()
    dtype, _ = choose_dtype("auto", here)
    assert dtype == ("bfloat16" if here.native_bf16 or here.gpu_bf16 else "float32")
    logging.getLogger(__name__).info("this machine: %s -> %s", here.describe(), dtype)


def test_resource_lineage_and_metadata_carry_the_chosen_dtype(settings):
    llm = LLMResource.from_settings(settings)
    assert llm.dtype == "auto"
    tuning = llm.tuning()
    assert llm.identity().lineage()["engine_dtype"] == tuning.dtype
    metadata = llm.engine_metadata()
    assert metadata["dtype"] == tuning.dtype and metadata["dtype_reason"] == tuning.dtype_reason
    assert tuning.summary().startswith("engine tuning on ")
    assert llm.requests_per_batch() == tuning.batch_size
    assert llm.requests_per_batch(5) == 5  # MIND_BATCH_SIZE wins
