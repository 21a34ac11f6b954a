"""The Prefect UI's run form of each preset deployment, cut to what the preset is about.

Prefect builds one parameter schema from `experiment_flow`'s signature: every field of every section,
~100 of them, the same for a Qwen3 preset as for the tiny demo. `pidistill serve` replaces each preset
deployment's schema with `preset_form(...)` after deploying:

    >>> form = preset_form(load_config("star-try-again"), parameter_schema(experiment_flow).model_dump())
    >>> list(form["definitions"]["ExperimentConfig"]["properties"])[:6]
    ['name', 'description', 'seed_result', 'domain', 'model', 'sampling']     # its own sections next

- **The preset's own sections first**, then the rest in the config's order. The run's `smoke` switch is
  the flow's own parameter (run at micro scale, as `--smoke`); `config.smoke`, the label `--smoke` sets,
  is left out.
- **Sections that cannot apply are left out**: the tiny model's recipe unless the preset runs the tiny
  model, OPSD settings unless an arm trains with OPSD, Ray's `scale` unless the preset sets it.
  (`pidistill run` and the generic flow keep every field.)
- **Arms as fields**: `arms[].set` lists the dotted keys the preset's arms vary, each typed and
  described as the field it overrides (enums as choices), instead of a raw JSON editor; other keys
  can still be added.
- **Optional fields as plain fields**: pydantic's `X | None` (`anyOf [X, null]`) becomes X with its
  default, so the form shows a text box, not a type switch that says "Property is type None".

The form only shapes the UI: the flow still validates the submitted config as an ExperimentConfig.
"""

from __future__ import annotations

import copy
from typing import Any

from experiments.config import ExperimentConfig

_FIRST = ("name", "description", "seed_result")


def without_null_choices(node: Any) -> Any:
    """`{"anyOf": [X, {"type": "null"}], ...}` -> `{**X, ...}`, everywhere in a schema."""
    if isinstance(node, list):
        return [without_null_choices(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: without_null_choices(v) for k, v in node.items()}
    choices = out.get("anyOf")
    if isinstance(choices, list):
        real = [c for c in choices if c != {"type": "null"}]
        if len(real) == 1 and len(real) < len(choices):
            del out["anyOf"]
            out = {**real[0], **out}
    return out


def _defs(schema: dict) -> dict[str, dict]:
    return schema["definitions"]


def _resolve(schema: dict, prop: dict) -> dict:
    """A property's own schema, following a `$ref` into the definitions."""
    ref = prop.get("$ref") or next((c.get("$ref") for c in prop.get("allOf", []) if "$ref" in c), None)
    return _defs(schema)[ref.rsplit("/", 1)[-1]] if ref else prop


def _field_schema(schema: dict, dotted: str) -> dict | None:
    """The schema of the config field at `dotted` (e.g. 'retry.feedback'), or None if there is none."""
    node = _defs(schema)["ExperimentConfig"]
    for part in dotted.split("."):
        prop = node.get("properties", {}).get(part)
        if prop is None:
            return None
        node = _resolve(schema, prop)
    return node


def _hidden(config: ExperimentConfig, partial: dict[str, Any]) -> list[tuple[str, str]]:
    """(definition, property) pairs this preset cannot use."""
    arms = [config.for_arm(a.name) for a in config.arms]
    hidden = []
    if all(a.model.name_or_path != "tiny" and a.retry.model != "tiny" for a in arms):
        hidden.append(("ModelConfig", "tiny"))
    if all(a.train.method != "opsd" for a in arms):
        hidden.append(("TrainConfig", "opsd"))
    if "scale" not in partial:
        hidden.append(("ExperimentConfig", "scale"))
    if "smoke" not in partial:  # a label `--smoke` sets (smoke-<preset> deployments carry it); the switch is the flow's
        hidden.append(("ExperimentConfig", "smoke"))
    return hidden


def _arm_fields(schema: dict, config: ExperimentConfig) -> dict[str, Any]:
    """`arms[].set` as fields: one per dotted key the preset's arms set, typed as the field it overrides."""
    keys = list(dict.fromkeys(k for a in config.arms for k in a.set))
    props = {}
    for key in keys:
        field = _field_schema(schema, key) or {}
        described = {k: v for k, v in field.items() if k in ("type", "enum", "description", "items", "minimum")}
        props[key] = {**described, "title": key}
    return {
        "title": "Set",
        "type": "object",
        "description": "What this arm changes: dotted config keys (the preset's arms vary these; add others).",
        "properties": props,
        "additionalProperties": True,
    }


def preset_form(config: ExperimentConfig, flow_schema: dict[str, Any]) -> dict[str, Any]:
    """The parameter schema of `config`'s deployment: `flow_schema` (Prefect's, of experiment_flow) reshaped."""
    schema = without_null_choices(copy.deepcopy(flow_schema))
    partial = config.model_dump(mode="json", exclude_defaults=True)
    arm_fields = _arm_fields(schema, config)  # before hiding: an arm may set a key of a hidden section
    for definition, prop in _hidden(config, partial):
        _defs(schema)[definition]["properties"].pop(prop, None)
    top = _defs(schema)["ExperimentConfig"]["properties"]
    order = [*_FIRST, *(k for k in partial if k not in _FIRST), *top]
    _defs(schema)["ExperimentConfig"]["properties"] = {k: top[k] for k in dict.fromkeys(order) if k in top}
    _defs(schema)["ArmConfig"]["properties"]["set"] = arm_fields
    # The two switches of a run above the long config: the UI orders parameters by `position`.
    for position, name in enumerate(("smoke", "run_id", "config")):
        if name in schema["properties"]:
            schema["properties"][name]["position"] = position
    return schema
