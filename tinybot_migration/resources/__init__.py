from tinybot_migration.resources.embedding_provider import EmbeddingProviderResource
from tinybot_migration.resources.new_database import NewDatabaseResource
from tinybot_migration.resources.old_database import OldDatabaseResource

__all__ = ["EmbeddingProviderResource", "NewDatabaseResource", "OldDatabaseResource"]
