"""Publishing: a blend (one config per phase) or an asset (one config per style, task family or
source and mode) as a Hugging Face dataset folder with a dataset card generated from lineage."""

from mind_assets.lib.stages import Stage
from mind_assets.publish.assets import published_dataset

STAGE = Stage(name="publish", description=__doc__, assets=(published_dataset,))
