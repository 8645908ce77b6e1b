"""Generation throughput, side by side in one run on the same 128 MIND prompts.

(a)  raw vLLM `LLM.chat`, all prompts in one call, with the engine configuration and the seeded
     sampling parameters the platform uses (so (a) and (b) generate the very same tokens);
(a0) raw vLLM with library defaults and unseeded sampling (chunked prefill on);
(a-) as (a) with prefix caching off;
(a~) as (a) in the dtype `MIND_DTYPE=auto` did not choose (bf16 where auto chose float32 and the
     other way round), so the table shows what the choice is worth on this CPU;
(b)  the `conversations` asset path through Dagster: planning, rendering, batching, persisting
     batches and writing parquet;
(c)  Hugging Face transformers `generate`, padding-batched, as a simple pipeline would do.

Writes its figures into benchmarks/RESULTS.md (the section between the generation markers).
Run with `make bench`; it takes about 15 minutes on a 2-core CPU machine. Every path runs at
the dtype `auto` chose for this machine except (a~); the header names the CPU and the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402


def bench_corpus(path: Path, n: int, words: int) -> Path:
    """The first n napkin sections cut to `words` words, one chunk each."""
    with NAPKIN.open() as src, path.open("w") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            row = json.loads(line)
            row["text"] = " ".join(row["text"].split()[:words])
            dst.write(json.dumps(row) + "\n")
    return path


# The MIND prompts end in an assistant prefix (the first speaker's label) that is continued.
CONTINUE = {"add_generation_prompt": False, "continue_final_message": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--hf-prompts", type=int, default=16)
    parser.add_argument("--hf-batch", type=int, default=32)
    parser.add_argument("--words", type=int, default=350)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mind-bench-"))
    os.environ["MIND_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("MIND_MODELS_DIR", str(ROOT / "data" / "models"))
    os.environ["MIND_MAX_TOKENS"] = str(args.max_tokens)
    os.environ["MIND_CORPUS__CHUNK_TOKENS"] = "2048"  # each cut section stays one chunk
    os.environ["MIND_KEEP_ENGINE_BETWEEN_RUNS"] = "1"
    # Generation is measured here; decontamination has its own benchmark (decontamination.py).
    os.environ.setdefault("MIND_DECONTAMINATION__BENCHMARKS", "[]")
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir(parents=True)

    import pyarrow.parquet as pq
    from dagster import DagsterInstance, MultiPartitionKey, materialize
    from vllm import LLM, SamplingParams

    from mind_assets.conversations.assets import conversations
    from mind_assets.conversations.generation import plan_conversations
    from mind_assets.conversations.styles import style_prompt_path
    from mind_assets.corpus.assets import chunks, raw_documents
    from mind_assets.corpus.shard_specs import make_shard_spec
    from mind_assets.corpus.shards import register_shard
    from mind_assets.definitions import ASSETS
    from mind_assets.lib.prompts import load_prompt
    from mind_assets.lib.storage import asset_path
    from mind_assets.lib.tokenizer import token_counter
    from mind_assets.llm.offline_engine import release_engines
    from mind_assets.llm.resource import LLMResource
    from mind_assets.settings import get_settings

    settings = get_settings()
    llm_resource = LLMResource.from_settings(settings)
    model_path = llm_resource.model_path()
    tuning = llm_resource.tuning()
    other_dtype = "float32" if tuning.dtype == "bfloat16" else "bfloat16"
    instance = DagsterInstance.get()
    style = "teacher_student"
    corpus = bench_corpus(work / "bench.jsonl", args.prompts, args.words)
    register_shard(instance, settings, make_shard_spec("bench", [str(corpus)]))
    resources = {"llm": llm_resource}
    materialize(
        ASSETS,
        selection=[raw_documents, chunks],
        partition_key="bench",
        instance=instance,
        resources=resources,
    )
    chunk_table = pq.read_table(asset_path(settings.data_dir, "chunks", "bench"))
    prompt = load_prompt(style_prompt_path(settings.prompts_dir, style))
    plan = plan_conversations(
        chunk_table,
        prompt,
        style,
        model_name=llm_resource.model_name,
        base_seed=settings.seed,
        max_model_len=settings.max_model_len,
        count_tokens=token_counter(model_path),
        max_tokens_cap=args.max_tokens,
    )
    requests = [p.request for p in plan.planned]
    messages = [r.as_openai_messages() for r in requests]
    print(f"{len(requests)} prompts, max_tokens {args.max_tokens}", flush=True)
    figures: dict[str, dict[str, float]] = {}

    def record(name: str, tokens: int, seconds: float, prompts: int) -> None:
        figures[name] = {
            "output_tokens": tokens,
            "seconds": round(seconds, 1),
            "prompts": prompts,
            "tok_s": round(tokens / seconds, 1),
        }
        print(name, figures[name], flush=True)

    def seeded_params():
        return [
            SamplingParams(
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                max_tokens=r.sampling.max_tokens,
                seed=r.sampling.seed,
            )
            for r in requests
        ]

    # Load the platform's engine before timing; (b) and (a) then run on that same engine object.
    engine = llm_resource.engine()
    started = time.monotonic()
    assert materialize(
        ASSETS,
        selection=[conversations],
        instance=instance,
        resources=resources,
        partition_key=MultiPartitionKey({"shard": "bench", "style": style}),
    ).success
    table = pq.read_table(asset_path(settings.data_dir, "conversations", "bench", style))
    record(
        "b", sum(table["completion_tokens"].to_pylist()), time.monotonic() - started, len(requests)
    )

    # (b) left these exact prompts in the prefix cache; (a) must start as cold as (b) did.
    engine.llm.reset_prefix_cache()
    started = time.monotonic()
    outs = engine.llm.chat(messages, seeded_params(), use_tqdm=False, **CONTINUE)
    record(
        "a",
        sum(len(o.outputs[0].token_ids) for o in outs),
        time.monotonic() - started,
        len(requests),
    )
    # A stored conversation starts with the assistant prefix its prompt ends in (the first
    # speaker's label); the raw completion continues after it.
    same = sum(
        item.request.response_prefix + o.outputs[0].text == stored
        for o, item, stored in zip(
            outs, plan.planned, _texts_in_plan_order(table, plan), strict=True
        )
    )
    figures["a"]["identical_to_b"] = same
    release_engines()

    def raw_engine(dtype: str = tuning.dtype, **kwargs):
        return LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=0.3,
            enforce_eager=True,
            **kwargs,
        )

    def time_raw_engine(name: str, params, dtype: str = tuning.dtype, **engine_kwargs) -> None:
        """One timed `chat` call over every prompt on a fresh raw engine, shut down after."""
        llm = raw_engine(dtype, **engine_kwargs)
        started = time.monotonic()
        outs = llm.chat(messages, params, use_tqdm=False, **CONTINUE)
        record(
            name,
            sum(len(o.outputs[0].token_ids) for o in outs),
            time.monotonic() - started,
            len(requests),
        )
        llm.llm_engine.engine_core.shutdown()

    time_raw_engine(
        "a_no_prefix_cache",
        seeded_params(),
        enable_chunked_prefill=False,
        enable_prefix_caching=False,
    )
    # The platform's configuration apart from the dtype (chunked prefill off, prefix cache on).
    step = {"max_num_batched_tokens": tuning.max_num_batched_tokens} if tuning.threads else {}
    time_raw_engine(
        "a_other_dtype", seeded_params(), other_dtype, enable_chunked_prefill=False, **step
    )
    unseeded = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens)
    time_raw_engine("a0_defaults_unseeded", unseeded)

    figures["c"] = hf_generate(
        model_path, messages[: args.hf_prompts], args.max_tokens, args.hf_batch, tuning.dtype
    )
    print("c", figures["c"], flush=True)
    write_results(figures, args, len(requests), tuning, other_dtype)


def _texts_in_plan_order(table, plan) -> list[str]:
    by_hash = dict(zip(table["request_hash"].to_pylist(), table["text"].to_pylist(), strict=True))
    return [by_hash[p.request.request_hash] for p in plan.planned]


def hf_generate(
    model_path: str, messages, max_tokens: int, batch: int, dtype: str
) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
    tokens = 0
    started = time.monotonic()
    for i in range(0, len(messages), batch):
        texts = [
            tokenizer.apply_chat_template(m, tokenize=False, continue_final_message=True)
            for m in messages[i : i + batch]
        ]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=True,
                temperature=0.7,
                top_p=0.95,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        eos = tokenizer.eos_token_id
        for row in new.tolist():
            tokens += next((j for j, t in enumerate(row) if t == eos), len(row))
    seconds = time.monotonic() - started
    return {
        "output_tokens": tokens,
        "seconds": round(seconds, 1),
        "prompts": len(messages),
        "tok_s": round(tokens / seconds, 1),
    }


def write_results(figures, args, n_prompts: int, tuning, other_dtype: str) -> None:
    a, b, c = figures["a"], figures["b"], figures["c"]
    other = figures["a_other_dtype"]
    rows = [
        (
            f"(a) vLLM `LLM.chat`, one call, platform config (seeded, prefix cache on), "
            f"{tuning.dtype} (**auto's choice**)",
            a,
        ),
        (f"(a~) same, {other_dtype}", other),
        ("(a) same, prefix caching off", figures["a_no_prefix_cache"]),
        ("(a0) vLLM defaults, unseeded (chunked prefill on)", figures["a0_defaults_unseeded"]),
        ("(b) `conversations` asset through Dagster", b),
        (f"(c) transformers `generate`, padded batches of {args.hf_batch}", c),
    ]
    lines = [
        "<!-- generation:start -->",
        "## Generation throughput (`benchmarks/generation.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on {tuning.host}; load average before the run "
        f"{os.getloadavg()[0]:.1f}. Embedded SmolLM2-135M-Instruct, {n_prompts} MIND "
        f"teacher-student prompts built from napkin sections cut to {args.words} words, "
        f"max_tokens {args.max_tokens}, temperature 0.7.",
        "",
        f"`MIND_DTYPE=auto` chose **{tuning.dtype}**: {tuning.dtype_reason}. Every path runs in "
        f"{tuning.dtype} except (a~).",
        "",
        "| path | prompts | output tokens | seconds | output tok/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {f['prompts']} | {f['output_tokens']} | {f['seconds']} | {f['tok_s']} |"
        for name, f in rows
    ]
    lines += [
        "",
        f"- **b/a = {b['tok_s'] / a['tok_s']:.2f}** (goal ≥ 0.9). (a) and (b) share engine settings and per-request seeds.",
        f"- **{tuning.dtype} / {other_dtype} = {a['tok_s'] / other['tok_s']:.2f}x** for (a) on this CPU: "
        "what `auto`'s choice is worth here.",
        f"- **b/c = {b['tok_s'] / c['tok_s']:.1f}**: the platform against a padded transformers loop.",
        f"- Prefix caching on/off for (a): {a['tok_s']} vs {figures['a_no_prefix_cache']['tok_s']} tok/s "
        f"({a['tok_s'] / figures['a_no_prefix_cache']['tok_s']:.2f}x).",
        f"- Seeded with chunked prefill off (a) vs library defaults, unseeded (a0): {a['tok_s']} vs "
        f"{figures['a0_defaults_unseeded']['tok_s']} tok/s ({a['tok_s'] / figures['a0_defaults_unseeded']['tok_s']:.2f}x): "
        + (
            "reproducible per-request seeds cost nothing here."
            if a["tok_s"] >= figures["a0_defaults_unseeded"]["tok_s"]
            else f"reproducible per-request seeds cost {1 - a['tok_s'] / figures['a0_defaults_unseeded']['tok_s']:.0%}."
        ),
        f"- Token-identical completions between (a) and (b): {a.get('identical_to_b', 0)}/{n_prompts}. Both use the same "
        "seeds; in bf16 a different prefix-cache state changes the batch shapes and rounding, in float32 outputs "
        "are batch-invariant (see README, Reproducibility).",
        "- The engine is loaded before timing; (b) includes the Dagster run, prompt rendering, token "
        "counting, request hashing, persisting the batch and writing parquet.",
        "<!-- generation:end -->",
    ]
    replace_section(RESULTS, "generation", "\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
