import sys

from tinybot_migration.cli.main import main

sys.exit(main())
