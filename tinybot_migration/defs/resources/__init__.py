from tinybot_migration.defs.resources.embedding_provider import EmbeddingProviderResource
from tinybot_migration.defs.resources.new_database import NewDatabaseResource
from tinybot_migration.defs.resources.old_database import OldDatabaseResource
from tinybot_migration.defs.resources.qdrant_store import QdrantStoreResource
from tinybot_migration.defs.resources.shapes_export import ShapesExportResource

__all__ = [
    "EmbeddingProviderResource",
    "NewDatabaseResource",
    "OldDatabaseResource",
    "QdrantStoreResource",
    "ShapesExportResource",
]
