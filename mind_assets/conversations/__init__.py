"""MIND conversations: each chunk rewritten by the engine as a dialogue in one of the seven
styles (or the rephrase baseline), in resumable batches, with full lineage on every row."""

from mind_assets.conversations.assets import MIND_PROMPTS, conversations, mind_prompts
from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.lib.stages import Stage
from mind_assets.settings import ConversationSettings

STAGE = Stage(
    name="conversations",
    description=__doc__,
    assets=(mind_prompts, conversations),
    families=(CONVERSATIONS,),
    version_sources=(MIND_PROMPTS,),
    settings=ConversationSettings,
)
