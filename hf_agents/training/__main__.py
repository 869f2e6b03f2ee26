"""`python -m hf_agents.training RECIPE [key=value ...]` (or `accelerate launch ... -m hf_agents.training ...`)."""

import sys

from hf_agents.training.launch import main

sys.exit(main())
