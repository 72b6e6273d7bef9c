import sys

from llmeval.cli import main

sys.exit(main())
