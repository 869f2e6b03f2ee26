"""Load a saved model only after checking it is one of ours and whole (a clear error instead of a random init)."""

from __future__ import annotations

from hf_agents.locations import check_saved_model, resolve


def load_checked(model_class, path, what: str | None = None, revision: str | None = None):
    """`model_class.from_pretrained(path)` for a local folder (or a Hub id of the `user/name` form) whose config is
    `model_class`'s model_type and whose safetensors weights open."""
    what = what or model_class.config_class.model_type
    local = resolve(path, "model", revision)
    check_saved_model(local, (model_class.config_class.model_type,), what)
    return model_class.from_pretrained(local)
