"""The package's floors: no module imports from a floor above its own (function-level imports included)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_agents"
# Low to high. models sits above data/envs and below rollout (evaluate_model acts with the agent).
LAYERS = [
    {"__init__", "actions", "files", "frames", "processes", "seeding", "cards", "locations", "publish"},
    {"data"},
    {"envs"},
    {"models"},
    {"rollout"},
    {"games"},
    {"training"},
    {"labelling"},
    {"cli", "__main__"},
]
FLOOR = {name: level for level, names in enumerate(LAYERS) for name in names}


def part_of(dotted: str) -> str:
    """hf_agents.<part>[.rest] -> part."""
    return dotted.split(".")[1] if dotted.count(".") else "__init__"


def imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("hf_agents"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_agents"):
            if node.module == "hf_agents":  # from hf_agents import actions
                yield from ((node.lineno, f"hf_agents.{a.name}") for a in node.names)
            else:
                yield node.lineno, node.module


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        own = part_of(".".join(rel.with_suffix("").parts))
        assert own in FLOOR, f"{rel}: '{own}' is on no floor; add it to LAYERS in tests/test_layering.py"
        for line, module in imported_modules(ast.parse(path.read_text(), str(path))):
            other = part_of(module)
            if FLOOR.get(other, -1) > FLOOR[own]:
                found.append(f"{rel}:{line} imports {module} ({other} is above {own})")
    return found


def test_no_import_from_a_lower_floor_to_a_higher_one():
    assert violations() == []


def test_the_checker_names_file_and_import_even_inside_a_function(tmp_path):
    bad = tmp_path / "hf_agents" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import hf_agents.actions\n\n\ndef f():\n    from hf_agents.games.jumppads import PADS\n")
    assert violations(tmp_path / "hf_agents") == [
        "hf_agents/data/bad.py:5 imports hf_agents.games.jumppads (games is above data)"]


def test_envs_register_jumppads_without_importing_the_game():
    code = ("import sys, gymnasium as gym, hf_agents.envs; assert gym.spec('hf_agents/JumpPads-v0'); "
            "assert not [m for m in sys.modules if m.startswith(('hf_agents.games', 'hf_agents.rollout'))]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
