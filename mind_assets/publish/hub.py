"""Upload a published folder to the Hugging Face Hub as a dataset repository."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mind_assets.publish.dataset import PublishError

TOKEN_VARIABLE = "HF_TOKEN"


def hub_token(environ: Mapping[str, str] | None = None) -> str:
    """The token an upload uses; refused before any work when it is not set."""
    token = (environ if environ is not None else os.environ).get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise PublishError(
            f"--repo-id needs a Hugging Face token with write access in {TOKEN_VARIABLE}; "
            "without --repo-id, `mind publish` writes the folder only"
        )
    return token


def push_folder(folder: Path, repo_id: str, *, token: str, private: bool) -> str:
    """Create the dataset repository if needed and upload the folder as one commit; returns the
    commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            commit_message=f"Publish {folder.name} from mind-assets",
        )
    except Exception as error:  # auth, network and Hub errors alike: the folder stays complete
        raise PublishError(
            f"upload of {folder} to the dataset repository {repo_id!r} failed: {error}; "
            "the folder is complete, rerun with --repo-id to retry"
        ) from error
    return str(commit.commit_url)
