"""`python -m hf_agents` = the `hf-agents` command."""

import sys

from hf_agents.cli import main

sys.exit(main())
