"""Publishing: a blend as a Hugging Face dataset folder with a dataset card built from lineage."""
