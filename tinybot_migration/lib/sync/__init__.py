"""DEV <-> PROD sync between two new databases: the engine, its tables, precheck and progress."""
