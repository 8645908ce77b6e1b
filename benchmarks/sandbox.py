"""What the tool-call jail costs, both ways side by side in one run.

(1) Per call: a trivial program run through the bubblewrap jail and through the plain child
    process of MIND_SANDBOX=unsafe-no-isolation (the sandbox before the jail), interleaved;
    median and p95 of the wall time the caller sees.
(2) End to end: the `solution_traces` asset with the real engine on the same GSM8K problems in
    one TIR mode, once per sandbox mode and alternating; the engine is loaded before timing, and
    every run starts from an empty prefix cache and regenerates its requests. TIR traces per
    second.

Writes its figures into benchmarks/RESULTS.md (the section between the sandbox markers).
Run with `make bench`; about 10 minutes on the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import RESULTS, replace_section  # noqa: E402
from mind_assets.math_traces.sandbox import (  # noqa: E402
    BUBBLEWRAP,
    UNSAFE,
    SandboxLimits,
    isolation_problem,
    run_python,
)

SHARED_DATA = Path(os.environ.get("MIND_SHARED_DATA", ROOT.parent / "shared" / "data"))
TRIVIAL = "print(1)"
LABELS = {
    BUBBLEWRAP: "bubblewrap jail",
    UNSAFE: "plain child process (unsafe-no-isolation, the sandbox before the jail)",
}


def cpu_description() -> str:
    """The CPU by lscpu's model name, its core count and the wide-vector flags it has."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags: set[str] = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wide = ", ".join(
        f"{flag} {'yes' if flag in flags else 'no'}"
        for flag in ("avx512f", "avx512_bf16", "amx_bf16")
    )
    return f"{model}, {os.cpu_count()} cores ({wide})"


def per_call(calls: int) -> dict[str, list[float]]:
    limits = SandboxLimits(wall_seconds=30)
    times: dict[str, list[float]] = {BUBBLEWRAP: [], UNSAFE: []}
    for mode in times:  # warm both paths (the jail check runs once per process)
        run_python(TRIVIAL, limits, mode)
    for i in range(calls):
        for mode in (BUBBLEWRAP, UNSAFE) if i % 2 == 0 else (UNSAFE, BUBBLEWRAP):
            started = time.perf_counter()
            result = run_python(TRIVIAL, limits, mode)
            times[mode].append(time.perf_counter() - started)
            if result.outcome != "ok" or result.stdout.strip() != "1":
                raise RuntimeError(f"{mode}: the trivial program failed: {result}")
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def end_to_end(
    problems: int, samples: int, mode: str, repeats: int, max_tokens: int
) -> list[dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="mind-bench-sandbox-"))
    mirror = work / "mirror" / "openai" / "gsm8k" / "main"
    mirror.mkdir(parents=True)
    for split in ("train", "test"):
        (mirror / f"{split}.jsonl").symlink_to(SHARED_DATA / "gsm8k" / f"{split}.jsonl")
    os.environ.update(
        {
            "MIND_DATA_DIR": str(work / "data"),
            "MIND_TASK_MIRROR_DIR": str(work / "mirror"),
            "MIND_MATH_PROBLEMS_LIMIT": str(problems),
            "MIND_MATH_SAMPLES_PER_PROBLEM": str(samples),
            "MIND_KEEP_ENGINE_BETWEEN_RUNS": "1",
            "DAGSTER_HOME": str(work / "dagster_home"),
        }
    )
    os.environ.setdefault("MIND_MODELS_DIR", str(ROOT / "data" / "models"))
    os.environ.setdefault("MIND_DTYPE", "float32")
    (work / "dagster_home").mkdir()

    import pyarrow.parquet as pq
    from dagster import DagsterInstance, MultiPartitionKey, materialize

    from mind_assets.definitions import ASSETS
    from mind_assets.lib.storage import asset_path
    from mind_assets.llm.offline_engine import release_engines, reset_prefix_caches
    from mind_assets.llm.resource import LLMResource
    from mind_assets.math_traces.assets import math_problems, solution_traces
    from mind_assets.settings import get_settings

    settings = get_settings()
    llm = LLMResource.from_settings(settings)
    instance = DagsterInstance.get()
    resources = {"llm": llm}
    assert materialize(
        ASSETS,
        selection=[math_problems],
        partition_key="gsm8k",
        instance=instance,
        resources=resources,
    ).success
    llm.engine()  # loaded before timing
    key = MultiPartitionKey({"source": "gsm8k", "mode": mode})
    requests = asset_path(
        settings.data_dir, "_requests", "solution_traces", "gsm8k", mode, suffix=""
    )
    runs = []
    # The first generation of a process is slower (warm-up): one short untimed run first.
    order = [UNSAFE] + [
        sandbox
        for repeat in range(repeats)
        for sandbox in ((UNSAFE, BUBBLEWRAP) if repeat % 2 == 0 else (BUBBLEWRAP, UNSAFE))
    ]
    for index, sandbox in enumerate(order):
        os.environ["MIND_SANDBOX"] = sandbox
        os.environ["MIND_MAX_TOKENS"] = str(16 if index == 0 else max_tokens)
        shutil.rmtree(requests, ignore_errors=True)  # generate again, do not reuse
        reset_prefix_caches()
        started = time.monotonic()
        assert materialize(
            ASSETS,
            selection=[solution_traces],
            partition_key=key,
            instance=instance,
            resources=resources,
        ).success
        seconds = time.monotonic() - started
        rows = []
        for suffix in (".parquet", ".quarantine.parquet"):
            path = asset_path(settings.data_dir, "solution_traces", "gsm8k", mode, suffix=suffix)
            rows += pq.read_table(path, columns=["tool_calls", "isolation"]).to_pylist()
        calls = [call for row in rows for call in row["tool_calls"]]
        isolation = {r["isolation"] for r in rows}
        assert isolation == {sandbox}, isolation
        if index == 0:
            continue
        runs.append(
            {
                "sandbox": sandbox,
                "traces": len(rows),
                "tool_calls": len(calls),
                "tool_seconds": sum(call["wall_seconds"] for call in calls),
                "seconds": seconds,
                "load": os.getloadavg()[0],
            }
        )
        print(runs[-1], flush=True)
    release_engines()
    shutil.rmtree(work, ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--mode", default="medium_tir")
    parser.add_argument("--repeats", type=int, default=1, help="end-to-end runs per sandbox")
    # At 96 tokens the embedded model starts code blocks but completes none, so no tool call
    # would run; 256 lets some complete.
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()

    problem = isolation_problem()
    if problem is not None:
        raise SystemExit(f"the jail cannot be set up here: {problem}")
    times = per_call(args.calls)
    for mode, values in times.items():
        print(mode, f"median {statistics.median(values) * 1000:.1f} ms", flush=True)
    runs = end_to_end(args.problems, args.samples, args.mode, args.repeats, args.max_tokens)
    write_results(times, runs, args)


def write_results(times: dict[str, list[float]], runs: list[dict[str, object]], args) -> None:
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    stats = {
        mode: {
            "median": statistics.median(values) * 1000,
            "p95": percentile(values, 0.95) * 1000,
            "mean": statistics.fmean(values) * 1000,
        }
        for mode, values in times.items()
    }
    jail, plain = stats[BUBBLEWRAP], stats[UNSAFE]
    lines = [
        "<!-- sandbox:start -->",
        "## Tool-call jail (`benchmarks/sandbox.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on {cpu_description()}; {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {bwrap}, as "
        f"{'root' if os.geteuid() == 0 else 'an ordinary user'}.",
        "",
        f"Per call: the trivial program `{TRIVIAL}`, {args.calls} calls each way, interleaved; wall "
        "time as the caller sees it (start, run, collect, clean up).",
        "",
        "| path | median ms | p95 ms | mean ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {LABELS[mode]} | {s['median']:.1f} | {s['p95']:.1f} | {s['mean']:.1f} |"
        for mode, s in stats.items()
    ]
    lines += [
        "",
        f"- **Jail overhead per call: +{jail['median'] - plain['median']:.1f} ms at the median "
        f"({jail['median'] / plain['median']:.2f}x), +{jail['p95'] - plain['p95']:.1f} ms at p95.**",
        "",
        f"End to end: `solution_traces` gsm8k/{args.mode}, {args.problems} problems x k={args.samples}, "
        f"max_tokens {args.max_tokens}, {os.environ.get('MIND_DTYPE')}, embedded "
        "SmolLM2-135M-Instruct, through Dagster; engine loaded and one short untimed run made "
        "before timing, prefix cache emptied and requests regenerated for every run, the two "
        "sandboxes alternating.",
        "",
        "| sandbox | traces | tool calls | seconds in tool calls | seconds | TIR traces/s | load average after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['sandbox']} | {r['traces']} | {r['tool_calls']} | {r['tool_seconds']:.2f} | "
        f"{r['seconds']:.1f} | {r['traces'] / r['seconds']:.3f} | {r['load']:.1f} |"
        for r in runs
    ]
    rate = {
        mode: sum(r["traces"] for r in runs if r["sandbox"] == mode)
        / sum(r["seconds"] for r in runs if r["sandbox"] == mode)
        for mode in (UNSAFE, BUBBLEWRAP)
    }
    calls = {mode: sum(r["tool_calls"] for r in runs if r["sandbox"] == mode) for mode in rate}
    tool = {mode: sum(r["tool_seconds"] for r in runs if r["sandbox"] == mode) for mode in rate}
    total = {mode: sum(r["seconds"] for r in runs if r["sandbox"] == mode) for mode in rate}
    lines += [
        "",
        f"- **TIR traces/s before (plain child) {rate[UNSAFE]:.3f}, after (jail) "
        f"{rate[BUBBLEWRAP]:.3f} ({rate[BUBBLEWRAP] / rate[UNSAFE]:.2f}x).** Tool calls made: "
        f"{calls[UNSAFE]} before, {calls[BUBBLEWRAP]} after (same problems, seeds and engine), "
        f"taking {tool[UNSAFE]:.2f} s and {tool[BUBBLEWRAP]:.2f} s of the runs: the sandbox's "
        "share (start to exit of each call, summed). The rest is generation, whose speed on this "
        "shared 2-core machine moves with the load of whatever else runs (load-average column)"
        + (
            ", and that, not the jail, is what the difference in traces/s reflects."
            if abs(tool[BUBBLEWRAP] - tool[UNSAFE]) < 0.1 * abs(total[BUBBLEWRAP] - total[UNSAFE])
            else "."
        ),
        "<!-- sandbox:end -->",
    ]
    replace_section(RESULTS, "sandbox", "\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
