"""shapes.inc exports: reading the JSON files, mapping senders to personas, importing memories."""
