from tinybot_migration.resources.embedding_provider import EmbeddingProviderResource
from tinybot_migration.resources.new_database import NewDatabaseResource
from tinybot_migration.resources.old_database import OldDatabaseResource
from tinybot_migration.resources.shapes_export import ShapesExportResource

__all__ = ["EmbeddingProviderResource", "NewDatabaseResource", "OldDatabaseResource", "ShapesExportResource"]
